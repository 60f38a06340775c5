"""Records to Bulk API bodies: index names, ``create`` actions, document sources, chunks.

Pure and fast: no I/O. Every document is written with ``op_type`` ``create`` and ``_id``
the record's deterministic ``_id``, into an index computed from the record alone (its
``time`` and fields, never the clock), so a redelivered record lands on the same document
and Elasticsearch answers 409: nothing is written twice.

The source is the record without the reserved ``_id``/``_tag``/``_raw`` and with ``time``
moved to ``time_key`` (``@timestamp``) as an ISO 8601 UTC date. Records that cannot be
formatted (a missing index field, a value JSON cannot hold) become rejections with the
reason, never exceptions.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from tailrace.outcome import Rejection
from tailrace.plugins import Record

from .config import ElasticsearchOutputOptions

__all__ = ["Built", "BulkChunk", "BulkFormatter", "IndexTemplate", "format_timestamp"]

_FIELD_RE = re.compile(r"\$\{record\.([^}]+)\}")
# strftime directives finer than a day: the index then changes within a day.
_SUB_DAY = set("HIpMSsfXcTRrklZz")
_CACHE_MAX = 4096
# Lines are joined in segments of this many documents as they are made, so only a few
# hundred small objects live at a time and their memory is reused (page faults are dear
# on VMs: formatting a whole batch of lines before joining ran several times slower).
_SEGMENT = 100


class _Missing(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _lookup(record: Record, dotted: str) -> Any:
    """``a.b`` as a nested path, else as a flat key holding dots."""
    if dotted in record:
        return record[dotted]
    value: Any = record
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            raise _Missing(dotted)
        value = value[part]
    return value


class IndexTemplate:
    """An index (or data stream) name template, compiled once.

    ``logs-%Y.%m.%d`` uses strftime on the record's ``time`` (UTC);
    ``app-${record.kubernetes.namespace}`` inserts a record field (``${...}`` values are
    inserted as they are, never passed through strftime).
    """

    def __init__(self, template: str) -> None:
        self.template = template
        parts = _FIELD_RE.split(template)
        self.literals = parts[0::2]
        self.fields = parts[1::2]
        directives = set(re.findall(r"%(.)", "".join(self.literals)))
        self.uses_time = bool(directives - {"%"})
        self.granularity = 1 if directives & _SUB_DAY else 86400
        self._cache: dict[tuple[Any, ...], bytes] = {}

    def render(self, record: Record, t: float | None) -> bytes:
        """The JSON-encoded name (``b'"logs-2024.01.02"'``) for ``record``.

        Raises:
            LookupError: a referenced field is missing, or the template needs a time and
                the record has none.
        """
        if self.uses_time:
            if t is None:
                raise LookupError(f"index template {self.template!r} needs the record's time, "
                                  "and the record has no numeric 'time'")
            slot = int(t // self.granularity)
        else:
            slot = 0
        if self.fields:
            try:
                values = tuple(str(_lookup(record, f)) for f in self.fields)
            except _Missing as exc:
                raise LookupError(f"index template {self.template!r} needs field "
                                  f"{exc.name!r}, and the record has none") from None
            key: tuple[Any, ...] = (slot, values)
        else:
            values = ()
            key = (slot,)
        name = self._cache.get(key)
        if name is None:
            stamp = time.gmtime(slot * self.granularity)
            text = time.strftime(self.literals[0], stamp) if self.uses_time else self.literals[0]
            for value, lit in zip(values, self.literals[1:], strict=True):
                text += value + (time.strftime(lit, stamp) if self.uses_time else lit)
            name = orjson.dumps(text)
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = name
        return name


class _Timestamps:
    """ISO 8601 UTC dates with a per-second cache: ``2024-01-02T03:04:05.678Z``."""

    def __init__(self, nanos: bool) -> None:
        self.nanos = nanos
        self._cache: dict[int, str] = {}

    def __call__(self, t: float) -> str:
        if self.nanos:
            sec, frac = divmod(int(round(t * 1e9)), 1_000_000_000)
        else:
            sec, frac = divmod(int(t * 1000), 1000)
        head = self._cache.get(sec)
        if head is None:
            head = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec))
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[sec] = head
        return f"{head}{frac:09d}Z" if self.nanos else f"{head}{frac:03d}Z"


def format_timestamp(t: float, nanos: bool = False) -> str:
    """``t`` (epoch seconds) as the ISO 8601 UTC date the es output writes."""
    return _Timestamps(nanos)(t)


def _plain(value: Any) -> Any:
    """``value`` with what JSON cannot hold made representable (the slow, rare path)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        return str(value)  # beyond 64 bits: orjson refuses it, Elasticsearch would too
    return value


@dataclass(slots=True)
class BulkChunk:
    """One bulk request: its NDJSON body and its records, in body order."""

    body: bytes
    records: list[Record]


@dataclass(slots=True)
class Built:
    """A sink batch as bulk requests, and the records that could not be formatted."""

    chunks: list[BulkChunk] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


class BulkFormatter:
    """Formats records for one ``es`` output (its index template, time and tag options)."""

    def __init__(self, options: ElasticsearchOutputOptions) -> None:
        self.options = options
        self.index = IndexTemplate(options.target)
        self.timestamps = _Timestamps(options.time_key_nanos)
        self.time_key = options.time_key
        self.tag_key = options.tag_key if options.include_tag_key else None
        self.batch_docs = options.batch_docs
        self.batch_bytes = options.batch_bytes
        self._action_heads: dict[bytes, bytes] = {}

    def _head(self, index: bytes) -> bytes:
        head = self._action_heads.get(index)
        if head is None:
            head = b'{"create":{"_index":' + index + b',"_id":'
            if len(self._action_heads) >= _CACHE_MAX:
                self._action_heads.clear()
            self._action_heads[index] = head
        return head

    def line(self, rec: Record) -> bytes:
        """The action and source lines of one record.

        Raises:
            LookupError: the record cannot be indexed (reason in the message).
        """
        src = rec.copy()
        doc_id = src.pop("_id", None)
        tag = src.pop("_tag", "")
        src.pop("_raw", None)
        t = src.pop("time", None)
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            t = None
        if not isinstance(doc_id, str) or not doc_id:
            raise LookupError("record has no '_id' (needed for exactly-once writes)")
        index = self.index.render(rec, t)
        if t is not None:
            src[self.time_key] = self.timestamps(t)
        if self.tag_key is not None:
            src[self.tag_key] = tag
        try:
            body = orjson.dumps(src)
        except TypeError:
            try:
                body = orjson.dumps(_plain(src))
            except TypeError as exc:
                raise LookupError(f"record is not serialisable as JSON: {exc}") from None
        return b"".join((self._head(index), orjson.dumps(doc_id), b"}}\n", body, b"\n"))

    def build(self, records: list[Record]) -> Built:
        """Bulk requests of at most ``batch_docs`` documents and ``batch_bytes`` bytes.

        A document larger than ``batch_bytes`` goes alone. Order is kept. Records that
        cannot be formatted are rejected with the reason, never raised.
        """
        out = Built()
        out.chunks.extend(self.iter_chunks(records, out.rejected))
        return out

    def iter_chunks(self, records: Iterable[Record], rejected: list[Rejection]
                    ) -> Iterator[BulkChunk]:
        """Like :meth:`build`, one request at a time (send one while making the next)."""
        max_docs, max_bytes = self.batch_docs, self.batch_bytes
        segments: list[bytes] = []
        lines: list[bytes] = []
        recs: list[Record] = []
        size = 0
        line_of = self.line
        for rec in records:
            try:
                line = line_of(rec)
            except LookupError as exc:
                rejected.append(Rejection(rec, f"es: {exc}"))
                continue
            n = len(line)
            if recs and (len(recs) >= max_docs or size + n > max_bytes):
                segments.append(b"".join(lines))
                yield BulkChunk(b"".join(segments), recs)
                segments, lines, recs, size = [], [], [], 0
            lines.append(line)
            recs.append(rec)
            size += n
            if len(lines) >= _SEGMENT:
                segments.append(b"".join(lines))
                lines = []
        if recs:
            segments.append(b"".join(lines))
            yield BulkChunk(b"".join(segments), recs)
