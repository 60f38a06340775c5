"""A processed batch as its JSON lines: what a sink gets from a version-2 entry.

The processor encodes each record once, as the JSON line the file output writes
(:func:`tailrace.wire.encode_processed`); :class:`JsonBatch` carries those lines with the
tag, time and original bytes of each record, so a sink routes and writes them without
decoding, and an output that wants maps decodes them on first use. The entry format itself
(fields, version, schema checks) is :mod:`tailrace.wire`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import orjson

from .errors import RecordError

__all__ = ["JsonBatch"]


class JsonBatch(Sequence[dict[str, Any]]):
    """Processed records as their JSON lines, with the tag and time of each.

    A sequence of records: indexing or iterating decodes every record once (cached), so an
    output that knows nothing of it works unchanged; :meth:`chunks` gives the JSON as it
    came, one blob per entry (split into lines only when records are selected or decoded:
    splitting and re-joining ~300 KB per entry cost more than writing it, page faults).
    """

    __slots__ = ("_blobs", "_lines", "_records", "raws", "tags", "times")

    def __init__(self, lines: list[bytes] | None, tags: list[str],
                 times: list[float | int | None], raws: dict[int, bytes] | None = None, *,
                 blobs: list[bytes] | None = None) -> None:
        if lines is None and blobs is None:
            raise ValueError("a JsonBatch needs its lines or its blobs")
        self._lines = lines  # one JSON document per record, without its newline
        self._blobs = blobs  # or: newline-terminated lines as they came, one blob per entry
        self.tags = tags
        self.times = times
        self.raws = raws or {}
        self._records: list[dict[str, Any]] | None = None

    @property
    def lines(self) -> list[bytes]:
        """One JSON document per record, without its newline."""
        if self._lines is None:
            lines: list[bytes] = []
            for blob in self._blobs or ():
                part = blob.split(b"\n")
                part.pop()  # after the last newline
                lines.extend(part)
            self._lines = lines
        return self._lines

    def __len__(self) -> int:
        return len(self.tags)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        return self.records()[i]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records())

    def chunks(self) -> list[bytes]:
        """The records as JSON lines (each ending in a newline), in one or more pieces."""
        if self._blobs is not None:
            return self._blobs
        return [b"\n".join(self._lines) + b"\n"] if self._lines else []

    def json(self) -> bytes:
        """The records as JSON lines (each ending in a newline), as the processor made them."""
        return b"".join(self.chunks())

    def records(self) -> list[dict[str, Any]]:
        """The records as maps (decoded once)."""
        if self._records is None:
            loads = orjson.loads
            try:
                recs = [loads(ln) for ln in self.lines]
            except orjson.JSONDecodeError as exc:
                raise RecordError(f"processed batch holds a record that is not JSON: {exc}"
                                  ) from None
            for i, raw in self.raws.items():
                recs[i]["_raw"] = raw
            self._records = recs
        return self._records

    def select(self, keep: list[int]) -> JsonBatch:
        """The records at positions ``keep`` (in that order)."""
        lines, tags, times = self.lines, self.tags, self.times
        raws = {n: self.raws[i] for n, i in enumerate(keep) if i in self.raws} if self.raws \
            else None
        return JsonBatch([lines[i] for i in keep], [tags[i] for i in keep],
                         [times[i] for i in keep], raws)

    @staticmethod
    def concat(parts: list[JsonBatch]) -> JsonBatch:
        if len(parts) == 1:
            return parts[0]
        if all(p._blobs is not None and p._lines is None for p in parts):
            tags: list[str] = []
            times: list[float | int | None] = []
            for p in parts:  # extend: no Python step per record
                tags += p.tags
                times += p.times
            batch = JsonBatch(None, tags, times, blobs=[b for p in parts for b in p._blobs or ()])
            at = 0
            for p in parts:
                for i, raw in p.raws.items():
                    batch.raws[at + i] = raw
                at += len(p)
            return batch
        lines: list[bytes] = []
        tags, times = [], []
        raws: dict[int, bytes] = {}
        for p in parts:
            for i, raw in p.raws.items():
                raws[len(lines) + i] = raw
            lines.extend(p.lines)
            tags.extend(p.tags)
            times.extend(p.times)
        return JsonBatch(lines, tags, times, raws)
