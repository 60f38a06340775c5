"""Records and their deterministic ids.

A record (Fluent Bit's convention) is a map: the line under ``log``, ``time`` as epoch
seconds with a fraction, parsed fields at top level, agent metadata, and the reserved
``_id`` and ``_tag``. ``_id`` is derived from (agent, file identity, line offset), so
redoing a batch after a crash yields the same ids and sinks can write idempotently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

__all__ = ["ID_KEY", "TAG_KEY", "Lines", "Record", "id_prefix", "record_id", "strip_reserved"]

ID_KEY = "_id"
TAG_KEY = "_tag"
Record = dict[str, Any]


def id_prefix(agent: str, file_identity: str) -> str:
    """The per-file part of every ``_id``: 16 hex chars of a hash of agent and file.

    Computed once per batch; a record id is this prefix, ``-`` and the line offset in hex.
    """
    digest = hashlib.blake2b(f"{agent}\0{file_identity}".encode(), digest_size=8).hexdigest()
    return digest + "-"


def record_id(agent: str, file_identity: str, offset: int) -> str:
    """The deterministic id of the line starting at ``offset`` (see :func:`id_prefix`)."""
    return f"{id_prefix(agent, file_identity)}{offset:x}"


def strip_reserved(record: Record) -> Record:
    """The record without ``_id`` and ``_tag`` (for outputs that write them elsewhere)."""
    return {k: v for k, v in record.items() if k != ID_KEY and k != TAG_KEY}


#: Keys a line's record has besides its metadata; metadata under one of them takes its place.
_LINE_KEYS = frozenset({"log", "time", ID_KEY, TAG_KEY, "stream", "_raw"})


@dataclass(slots=True)
class Lines:
    """The lines of one raw batch, decoded, and what each line's record carries.

    The record of line ``i`` is ``{"log": texts[i], "time": times[i], "_id": id_prefix +
    hex(offsets[i]), "_tag": tag, **meta}``, then ``stream`` (when the batch has streams)
    and, for a line that was not valid UTF-8, ``_raw`` (its bytes; ``log`` has U+FFFD).
    Nested maps in ``meta`` are copied into each record. :meth:`records` builds them all;
    a filter's ``process_lines`` hook may build its output from these directly instead.
    """

    texts: list[str]
    times: list[float]
    offsets: list[int]
    id_prefix: str
    tag: str
    meta: dict[str, Any]
    streams: list[str] | None
    #: Lines that were not valid UTF-8: their index and original bytes.
    invalid: dict[int, bytes]

    @property
    def nested(self) -> list[str]:
        """Metadata keys holding maps (each record gets its own copy)."""
        return [k for k, v in self.meta.items() if isinstance(v, dict)]

    @property
    def plain(self) -> bool:
        """No metadata key takes the place of ``log``, ``time``, ``_id``, ``_tag`` ...."""
        return _LINE_KEYS.isdisjoint(self.meta)

    def records(self) -> list[Record]:
        """One record per line (see the class)."""
        return self._build(self.texts, self.times, self.offsets, self.streams, 0)

    def record(self, i: int) -> Record:
        """The record of line ``i``."""
        streams = self.streams[i:i + 1] if self.streams is not None else None
        return self._build(self.texts[i:i + 1], self.times[i:i + 1], self.offsets[i:i + 1],
                           streams, i)[0]

    def _build(self, texts: list[str], times: list[float], offsets: list[int],
               streams: list[str] | None, first: int) -> list[Record]:
        prefix, tag, meta = self.id_prefix, self.tag, self.meta
        out: list[Record] = [
            {"log": text, "time": t, "_id": f"{prefix}{off:x}", "_tag": tag, **meta}
            for text, t, off in zip(texts, times, offsets, strict=True)
        ]
        nested = self.nested
        if nested:
            for rec in out:
                for k in nested:
                    rec[k] = dict(meta[k])  # each record owns its nested maps
        if streams is not None:
            for rec, stream in zip(out, streams, strict=False):
                rec["stream"] = stream
        invalid = self.invalid
        if len(out) == 1:  # record(i): one lookup, not a scan of every invalid line
            raw = invalid.get(first)
            if raw is not None:
                out[0]["_raw"] = raw
        else:
            for i, raw in invalid.items():
                if first <= i < first + len(out):
                    out[i - first]["_raw"] = raw  # for outputs that write the bytes (plain)
        return out
