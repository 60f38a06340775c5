"""Reading and pruning the dead-letter streams (one per partition, ``tr:{pN}:dlq``).

Every stage writes there: processors (raw batches that do not decode, records a filter
refused, poison entries) and sinks (records an output refused, with the error type and
reason). An entry holds ``kind`` (``raw`` or ``records``), ``b`` (the payload), ``stage``,
``plugin``, ``error``, ``source`` (the stream entry it came from) and ``time``. Entries are
named ``P/ID`` (partition and stream id) on the command line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import redis

from tailrace.errors import RecordError
from tailrace.keys import Keys
from tailrace.scriptcalls import Scripts
from tailrace.wire import RawBatch, decode_raw

__all__ = ["DeadLetterEntry", "DeadLetterStore", "Selection", "Summary", "parse_ref"]

_SCAN_PAGE = 200


def parse_ref(ref: str) -> tuple[int | None, str]:
    """``3/1700000000000-0`` -> (3, id); a bare id -> (None, id) (any partition)."""
    if "/" in ref:
        part, entry = ref.split("/", 1)
        return int(part), entry
    return None, ref


@dataclass(frozen=True, slots=True)
class Summary:
    """A dead letter without its payload."""

    partition: int
    id: str
    kind: str
    stage: str
    plugin: str
    time_ms: int

    @property
    def ref(self) -> str:
        return f"{self.partition}/{self.id}"


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters a command acts on (all of them by default)."""

    partitions: tuple[int, ...] = ()
    since_ms: int | None = None
    until_ms: int | None = None
    stage: str | None = None
    plugin: str | None = None

    def bounds(self) -> tuple[str, str]:
        lo = "-" if self.since_ms is None else f"{self.since_ms}-0"
        hi = "+" if self.until_ms is None else f"{self.until_ms}-{2**63 - 1}"
        return lo, hi

    def wants(self, s: Summary) -> bool:
        return ((self.stage is None or s.stage == self.stage)
                and (self.plugin is None or s.plugin == self.plugin))


@dataclass(slots=True)
class DeadLetterEntry:
    """A whole dead letter, payload included."""

    partition: int
    id: str
    kind: str
    stage: str
    plugin: str
    error: str
    source: str
    time_ms: int
    payload: bytes
    replayed: str | None = None  # "out 1700...-0 search 1700..." once replayed

    @property
    def ref(self) -> str:
        return f"{self.partition}/{self.id}"

    def records(self) -> list[dict[str, Any]]:
        """The records of a ``records`` entry (empty when the payload does not decode)."""
        try:
            doc = msgpack.unpackb(self.payload, raw=False, strict_map_key=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return []
        return [r for r in doc if isinstance(r, dict)] if isinstance(doc, list) else []

    def raw_batch(self) -> RawBatch | None:
        """The batch of a ``raw`` entry, or ``None`` when it does not decode (why it is here)."""
        try:
            return decode_raw({b"v": b"1", b"b": self.payload})
        except RecordError:
            return None

    def size(self) -> int:
        """Records in a ``records`` entry, lines in a decodable ``raw`` one, else 0."""
        if self.kind == "raw":
            batch = self.raw_batch()
            return len(batch.lines) if batch else 0
        return len(self.records())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


class DeadLetterStore:
    """The dead-letter streams of one pipeline."""

    def __init__(self, client: redis.Redis, keys: Keys, partitions: int) -> None:
        self.client = client
        self.keys = keys
        self.partitions = partitions
        self._scripts = Scripts(client, keys)

    def _parts(self, selection: Selection) -> Iterable[int]:
        return selection.partitions or range(self.partitions)

    def counts(self) -> dict[int, int]:
        """Dead letters per partition."""
        pipe = self.client.pipeline(transaction=False)
        for p in range(self.partitions):
            pipe.xlen(self.keys.dlq(p))
        return {p: int(n) for p, n in enumerate(pipe.execute())}

    def scan(self, selection: Selection = Selection()) -> Iterator[Summary]:
        """Every selected dead letter, oldest first per partition, without payloads."""
        lo, hi = selection.bounds()
        for p in self._parts(selection):
            start = lo
            while True:
                page = self._scripts.dlq_scan(p, start, hi, _SCAN_PAGE)
                for d in page:
                    s = Summary(p, d.id, d.kind, d.stage, d.plugin, d.time_ms)
                    if selection.wants(s):
                        yield s
                if len(page) < _SCAN_PAGE:
                    break
                start = "(" + page[-1].id

    def _entry(self, p: int, entry_id: bytes | str, fields: dict[bytes, bytes],
               replayed: bytes | None) -> DeadLetterEntry:
        return DeadLetterEntry(
            partition=p, id=_text(entry_id), kind=_text(fields.get(b"kind")),
            stage=_text(fields.get(b"stage")), plugin=_text(fields.get(b"plugin")),
            error=_text(fields.get(b"error")), source=_text(fields.get(b"source")),
            time_ms=int(fields.get(b"time") or 0), payload=fields.get(b"b") or b"",
            replayed=None if replayed is None else _text(replayed),
        )

    def latest(self, selection: Selection = Selection(), limit: int = 50
               ) -> list[DeadLetterEntry]:
        """The newest ``limit`` selected dead letters over all partitions, newest first."""
        lo, hi = selection.bounds()
        found: list[tuple[int, bytes, dict[bytes, bytes]]] = []
        for p in self._parts(selection):
            end = hi
            kept = 0
            while kept < limit:
                page: Any = self.client.xrevrange(self.keys.dlq(p), end, lo, count=limit)
                for entry_id, fields in page:
                    stage, plugin = _text(fields.get(b"stage")), _text(fields.get(b"plugin"))
                    if (selection.stage in (None, stage)
                            and selection.plugin in (None, plugin)):
                        found.append((p, entry_id, fields))
                        kept += 1
                if len(page) < limit:
                    break
                end = "(" + _text(page[-1][0])
        found.sort(key=lambda x: tuple(int(n) for n in _text(x[1]).split("-")), reverse=True)
        found = found[:limit]
        marks = self._marks([(p, _text(i)) for p, i, _ in found])
        return [self._entry(p, i, f, marks.get((p, _text(i)))) for p, i, f in found]

    def _marks(self, refs: list[tuple[int, str]]) -> dict[tuple[int, str], bytes]:
        if not refs:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for p, i in refs:
            pipe.hget(self.keys.dlq_replayed(p), i)
        return {ref: m for ref, m in zip(refs, pipe.execute(), strict=True) if m is not None}

    def get(self, ref: str) -> DeadLetterEntry | None:
        """The dead letter ``P/ID`` (or a bare ID, looked up in every partition)."""
        part, entry_id = parse_ref(ref)
        for p in [part] if part is not None else range(self.partitions):
            page: Any = self.client.xrange(self.keys.dlq(p), entry_id, entry_id)
            if page:
                mark = self.client.hget(self.keys.dlq_replayed(p), entry_id)
                return self._entry(p, page[0][0], page[0][1], mark)  # type: ignore[arg-type]
        return None

    def replayed(self, summaries: list[Summary]) -> set[tuple[int, str]]:
        """Which of ``summaries`` were replayed already."""
        return set(self._marks([(s.partition, s.id) for s in summaries]))

    def purge(self, selection: Selection = Selection(), *, only_replayed: bool = False) -> int:
        """Delete the selected dead letters (and their replay marks); returns how many."""
        removed = 0
        batch: list[Summary] = []

        def flush() -> int:
            chosen = list(batch)
            if only_replayed:
                done = self.replayed(batch)
                chosen = [s for s in batch if (s.partition, s.id) in done]
            pipe = self.client.pipeline(transaction=False)
            for s in chosen:
                pipe.xdel(self.keys.dlq(s.partition), s.id)
                pipe.hdel(self.keys.dlq_replayed(s.partition), s.id)
            pipe.execute()
            batch.clear()
            return len(chosen)

        for s in self.scan(selection):
            batch.append(s)
            if len(batch) >= 500:
                removed += flush()
        if batch:
            removed += flush()
        return removed
