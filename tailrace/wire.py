"""Wire format version 1: what travels in the streams, as msgpack.

One stream entry carries one batch in two fields: ``v`` (format version, ``b"1"``) and
``b`` (the msgpack bytes). Raw batches (agent -> processors) carry a file's lines as
bytes with their byte offsets; processed batches (processors -> sinks) are a list of
records (maps). Decoding is defensive: a size limit before unpacking, msgpack's own
container limits, and a schema check; anything that fails raises :class:`RecordError`
so the caller can dead-letter the entry instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import RecordError

_ormsgpack: Any
try:  # the fast decoder when installed (a dependency); msgpack otherwise
    import ormsgpack as _ormsgpack
except ImportError:  # pragma: no cover - exercised where ormsgpack is absent
    _ormsgpack = None

__all__ = [
    "FORMAT_VERSION",
    "MAX_ENTRY_BYTES",
    "RawBatch",
    "decode_raw",
    "decode_records",
    "encode_raw",
    "encode_records",
    "entry_payload",
]

FORMAT_VERSION = 1
_VERSION_FIELD = b"1"
MAX_ENTRY_BYTES = 64 * 1024 * 1024
_MAX_LINES_PER_BATCH = 1_000_000


@dataclass(slots=True)
class RawBatch:
    """A run of consecutive complete lines of one source file.

    ``end`` is the byte *after* the last consumed byte: resuming from it neither repeats
    nor skips a line. ``offsets[i]`` is the byte offset where ``lines[i]`` starts.
    """

    agent: str
    input: str
    tag: str
    path: str
    file: str
    start: int
    end: int
    lines: list[bytes]
    offsets: list[int]
    times: list[float] | None = None
    streams: list[str] | None = None
    meta: dict[str, str] = field(default_factory=dict)
    #: when the agent read the batch (epoch seconds): the ``time`` of lines that carry none,
    #: fixed in the batch so a redone batch yields the very same records.
    time: float | None = None


def encode_raw(batch: RawBatch) -> bytes:
    """Pack a raw batch for the ``b`` field."""
    doc: dict[str, Any] = {
        "agent": batch.agent,
        "input": batch.input,
        "tag": batch.tag,
        "path": batch.path,
        "file": batch.file,
        "start": batch.start,
        "end": batch.end,
        "lines": batch.lines,
        "offsets": batch.offsets,
        "meta": batch.meta,
    }
    if batch.times is not None:
        doc["times"] = batch.times
    if batch.streams is not None:
        doc["streams"] = batch.streams
    if batch.time is not None:
        doc["time"] = batch.time
    return msgpack.packb(doc, use_bin_type=True)  # type: ignore[no-any-return]


def entry_payload(fields: Mapping[bytes, bytes]) -> bytes:
    """Check the entry's version field and size, and return its ``b`` payload."""
    version = fields.get(b"v")
    if version != _VERSION_FIELD:
        raise RecordError(
            f"unsupported wire format version {version!r} (this tailrace reads version "
            f"{FORMAT_VERSION}); upgrade the workers or replay the entry with a matching version"
        )
    payload = fields.get(b"b")
    if not isinstance(payload, bytes):
        raise RecordError("entry has no 'b' payload field")
    if len(payload) > MAX_ENTRY_BYTES:
        raise RecordError(f"entry payload is {len(payload)} bytes, over {MAX_ENTRY_BYTES}")
    return payload


def _unpack(payload: bytes) -> Any:
    if _ormsgpack is not None:
        # About 1.7x faster on processed batches than msgpack's C unpacker; as strict
        # (string map keys only; a length beyond the payload fails, nothing preallocated).
        try:
            return _ormsgpack.unpackb(payload)
        except ValueError as exc:  # ormsgpack.MsgpackDecodeError
            raise RecordError(f"payload is not valid msgpack: {exc}") from exc
    try:
        return msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            max_array_len=_MAX_LINES_PER_BATCH,
        )
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RecordError(f"payload is not valid msgpack: {exc}") from exc


_RAW_STR = ("agent", "input", "tag", "path", "file")


def decode_raw(fields: Mapping[bytes, bytes]) -> RawBatch:
    """Decode and schema-check a raw batch entry.

    Raises:
        RecordError: the entry is malformed; the message says which field and why.
    """
    doc = _unpack(entry_payload(fields))
    if not isinstance(doc, dict):
        raise RecordError(f"raw batch must be a map, got {type(doc).__name__}")
    for name in _RAW_STR:
        if not isinstance(doc.get(name), str):
            raise RecordError(f"raw batch field {name!r} must be a string")
    start, end = doc.get("start"), doc.get("end")
    if not isinstance(start, int) or not isinstance(end, int) or not 0 <= start <= end:
        raise RecordError(f"raw batch offsets must satisfy 0 <= start <= end, got {start}, {end}")
    lines, offsets = doc.get("lines"), doc.get("offsets")
    if not isinstance(lines, list) or not isinstance(offsets, list):
        raise RecordError("raw batch fields 'lines' and 'offsets' must be lists")
    if len(lines) != len(offsets):
        raise RecordError(f"raw batch has {len(lines)} lines but {len(offsets)} offsets")
    if not all(type(x) is bytes for x in lines):
        raise RecordError("raw batch 'lines' must all be bytes")
    if not all(type(x) is int for x in offsets):
        raise RecordError("raw batch 'offsets' must all be integers")
    times, streams = doc.get("times"), doc.get("streams")
    if times is not None and (not isinstance(times, list) or len(times) != len(lines)):
        raise RecordError("raw batch 'times' must be a list parallel to 'lines'")
    if streams is not None and (not isinstance(streams, list) or len(streams) != len(lines)):
        raise RecordError("raw batch 'streams' must be a list parallel to 'lines'")
    meta = doc.get("meta") or {}
    if not isinstance(meta, dict):
        raise RecordError("raw batch 'meta' must be a map")
    read_time = doc.get("time")
    if read_time is not None and (not isinstance(read_time, (int, float))
                                  or isinstance(read_time, bool)):
        raise RecordError("raw batch 'time' must be a number (epoch seconds)")
    return RawBatch(
        agent=doc["agent"],
        input=doc["input"],
        tag=doc["tag"],
        path=doc["path"],
        file=doc["file"],
        start=start,
        end=end,
        lines=lines,
        offsets=offsets,
        times=times,
        streams=streams,
        meta=meta,
        time=float(read_time) if read_time is not None else None,
    )


def encode_records(records: list[dict[str, Any]]) -> bytes:
    """Pack a processed batch (a list of records) for the ``b`` field."""
    return msgpack.packb(records, use_bin_type=True)  # type: ignore[no-any-return]


def decode_records(fields: Mapping[bytes, bytes]) -> list[dict[str, Any]]:
    """Decode and schema-check a processed batch entry.

    Raises:
        RecordError: the entry is not a list of records each carrying ``_id`` and ``_tag``.
    """
    doc = _unpack(entry_payload(fields))
    if not isinstance(doc, list):
        raise RecordError(f"processed batch must be a list of records, got {type(doc).__name__}")
    for rec in doc:
        if not isinstance(rec, dict) or not isinstance(rec.get("_id"), str):
            raise RecordError("every record of a processed batch must be a map with an '_id'")
        if not isinstance(rec.get("_tag"), str):
            raise RecordError(f"record {rec['_id']} has no '_tag'")
    return doc
