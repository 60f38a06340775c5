"""The wire format: what travels in the streams.

One stream entry carries one batch in two fields: ``v`` (format version) and ``b`` (the
payload). Raw batches (agent -> processors, version 1) carry a file's lines as bytes with
their byte offsets, as msgpack. Processed batches (processors -> sinks) are version 2 since
2026-12: each record already encoded as the JSON document the file output writes, plus what
a sink needs to route them without decoding (:class:`JsonBatch`); version 1 (a msgpack list
of records) is still read, so entries left in the streams by older processors are delivered
during an upgrade, and dead-letter replays still write it. Decoding is defensive: a size
limit before unpacking, msgpack's own container limits, and a schema check; anything that
fails raises :class:`RecordError` so the caller can dead-letter the entry instead of crashing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from typing import Any

import msgpack
import orjson

from .errors import RecordError
from .jsonbatch import JsonBatch

_ormsgpack: Any
try:  # the fast decoder when installed (a dependency); msgpack otherwise
    import ormsgpack as _ormsgpack
except ImportError:  # pragma: no cover - exercised where ormsgpack is absent
    _ormsgpack = None

__all__ = [
    "FORMAT_VERSION",
    "MAX_ENTRY_BYTES",
    "RECORDS_VERSION",
    "JsonBatch",
    "RawBatch",
    "decode_processed",
    "decode_raw",
    "decode_records",
    "encode_processed",
    "encode_raw",
    "encode_records",
    "entry_payload",
]

FORMAT_VERSION = 1
#: The version processors write on ``out`` (:func:`encode_processed`); 1 is still read.
RECORDS_VERSION = 2
_VERSION_FIELD = str(FORMAT_VERSION).encode()  # what the ``v`` field holds
_V2_FIELD = str(RECORDS_VERSION).encode()
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


def entry_payload(fields: Mapping[bytes, bytes], versions: tuple[bytes, ...] = (_VERSION_FIELD,)
                  ) -> bytes:
    """Check the entry's version field (one of ``versions``) and size; its ``b`` payload."""
    version = fields.get(b"v")
    if version not in versions:
        known = ", ".join(v.decode() for v in versions)
        raise RecordError(
            f"unsupported wire format version {version!r} (this tailrace reads version "
            f"{known} here); upgrade the workers or replay the entry with a matching version"
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
    # set(map(type, ...)) runs in C: the per-line generator checks cost ~0.1 us a line.
    if lines and set(map(type, lines)) != {bytes}:
        raise RecordError("raw batch 'lines' must all be bytes")
    if offsets and set(map(type, offsets)) != {int}:
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
    """Decode and schema-check a processed batch entry (either version) into records.

    Raises:
        RecordError: the entry is not a list of records each carrying ``_id`` and ``_tag``.
    """
    if fields.get(b"v") == _V2_FIELD:
        return _decode_v2(entry_payload(fields, (_V2_FIELD,))).records()
    doc = _unpack(entry_payload(fields))
    if not isinstance(doc, list):
        raise RecordError(f"processed batch must be a list of records, got {type(doc).__name__}")
    for rec in doc:
        if not isinstance(rec, dict) or not isinstance(rec.get("_id"), str):
            raise RecordError("every record of a processed batch must be a map with an '_id'")
        if not isinstance(rec.get("_tag"), str):
            raise RecordError(f"record {rec['_id']} has no '_tag'")
    return doc


# -- processed batches, version 2 -------------------------------------------------------
# Payload: a msgpack map {"n": records, "tag": str (all share it) | "tags": [str],
# "times": [number | None], "json": n JSON documents, each ending in "\n",
# "raw": [[index, bytes], ...] (optional: the original bytes of lines that were not valid
# UTF-8)}.
# The JSON is made once, by the processor; a file or stdout output writes it as it is and
# only outputs that want the structure (es, msgpack, templates) decode it, on demand.

_SLICE = 100  # records encoded per join: few live objects at a time (see sinks/formats.py)
_TAG = itemgetter("_tag")


def _bytes_as_text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def encode_processed(records: list[dict[str, Any]]) -> bytes:
    """Pack a processed batch (version 2) for the ``b`` field.

    Raises:
        TypeError, ValueError: a record cannot be encoded (a value JSON cannot hold, a
            missing or non-text ``_tag``); the caller splits the batch to find it.
    """
    dumps, opt = orjson.dumps, orjson.OPT_APPEND_NEWLINE
    parts: list[bytes] = []
    raws: dict[int, bytes] = {}
    for i in range(0, len(records), _SLICE):
        part = records[i : i + _SLICE]
        try:
            parts.append(b"".join([dumps(r, option=opt) for r in part]))
        except TypeError:
            # A line that was not valid UTF-8 carries its original bytes in ``_raw``: the
            # JSON has it as text in ``log`` (U+FFFD), the bytes travel beside it.
            docs = []
            for j, r in enumerate(part, i):
                raw = r.get("_raw")
                if isinstance(raw, bytes):
                    raws[j] = raw
                    r = {k: v for k, v in r.items() if k != "_raw"}
                docs.append(dumps(r, default=_bytes_as_text, option=opt))
            parts.append(b"".join(docs))
    try:
        tags = list(map(_TAG, records))  # map: no Python frame per record
    except KeyError:
        raise ValueError("every record needs a '_tag'") from None
    doc: dict[str, Any] = {"n": len(records)}
    if tags and type(tags[0]) is str and tags.count(tags[0]) == len(tags):
        doc["tag"] = tags[0]
    elif all(type(t) is str for t in tags):
        doc["tags"] = tags
    else:
        raise ValueError("every record's '_tag' must be text")
    if raws:
        doc["raw"] = [[i, raw] for i, raw in raws.items()]
    times = list(map(dict.get, records, repeat("time")))
    if set(map(type, times)) != {float}:  # a filter set one to something else
        times = [t if type(t) is float or type(t) is int else None for t in times]
    doc["times"] = times
    return _with_json(doc, parts)


def _with_json(doc: dict[str, Any], parts: list[bytes]) -> bytes:
    """``packb({**doc, "json": b"".join(parts)})`` with the blob copied once, not three
    times (join, then msgpack's growing buffer): ~350 KB per entry, fresh pages each time."""
    if len(doc) >= 15:  # not a fixmap (whose count is in its first byte): the plain way
        return msgpack.packb({**doc, "json": b"".join(parts)},  # type: ignore[no-any-return]
                             use_bin_type=True)
    head = msgpack.packb(doc, use_bin_type=True)
    size = sum(map(len, parts))
    return b"".join([bytes((0x80 | (len(doc) + 1),)), memoryview(head)[1:], b"\xa4json",
                     b"\xc6", size.to_bytes(4, "big"), *parts])


def _decode_v2(payload: bytes) -> JsonBatch:
    doc = _unpack(payload)
    if not isinstance(doc, dict):
        raise RecordError(f"processed batch must be a map, got {type(doc).__name__}")
    n, blob = doc.get("n"), doc.get("json")
    if type(n) is not int or not isinstance(blob, bytes):
        raise RecordError("processed batch needs 'n' (a count) and 'json' (bytes)")
    # orjson escapes newlines inside strings: one per record. Counted as what replace()
    # removes: bytes.count of one byte walks it byte by byte (~0.18 µs a line here),
    # replace finds them with memchr (~0.03 µs, a transient copy of the blob).
    count = len(blob) - len(blob.replace(b"\n", b""))
    if count != n or (n and not blob.endswith(b"\n")):
        raise RecordError(f"processed batch says {n} records but holds {count} lines")
    tag, tags = doc.get("tag"), doc.get("tags")
    if isinstance(tag, str):
        tags = [tag] * n
    elif not isinstance(tags, list) or len(tags) != n or not all(type(t) is str for t in tags):
        raise RecordError("processed batch needs a 'tag', or 'tags' parallel to its records")
    times = doc.get("times")
    if not isinstance(times, list) or len(times) != n:
        raise RecordError("processed batch 'times' must be a list parallel to its records")
    pairs = doc.get("raw") or []
    if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and type(p[0]) is int and 0 <= p[0] < n
            and isinstance(p[1], bytes) for p in pairs):
        raise RecordError("processed batch 'raw' must pair record positions with bytes")
    return JsonBatch(None, tags, times, {i: raw for i, raw in pairs}, blobs=[blob] if n else [])


def decode_processed(fields: Mapping[bytes, bytes]) -> JsonBatch | list[dict[str, Any]]:
    """A processed entry of either version: a :class:`JsonBatch` (2) or records (1).

    Raises:
        RecordError: the entry is malformed; the message says what is wrong.
    """
    if fields.get(b"v") == _V2_FIELD:
        return _decode_v2(entry_payload(fields, (_V2_FIELD,)))
    return decode_records(fields)
