"""The reserved ``_id`` and ``_tag`` are the pipeline's: a filter cannot change them.

``_id`` is what makes delivery idempotent (Elasticsearch answers 409 to a second record
with the same id, and that counts as delivered): a filter that overwrote it would make a
record vanish without a trace. ``_tag`` routes the record; only filters that declare they
change tags (``rewrite_tag``, a third-party filter declaring ``changes_tags``) may. The
chain checks the filters that could touch them (user code, third-party plugins, ``nest``,
``kubernetes``) once per batch: it keeps a list
of the ids and tags it handed over (references, no dict copies), puts back what changed,
counts ``reserved_kept`` and logs once per batch (rate-limited), never per record. New
dicts the filter returns must carry an input record's ``_id`` (a copy) or one derived from
it as splits and copies are (``<_id>-<suffix>``: the python filter, rewrite_tag); one that
does not
takes the id of the record at its position when the filter returned one record per input,
else it is dead-lettered (which line it came from cannot be told).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from tailrace.logs import RateLimiter, event
from tailrace.outcome import FilterResult, Rejection
from tailrace.record import ID_KEY, TAG_KEY

__all__ = ["KEEPS_RESERVED", "ReservedGuard", "report_kept"]

log = logging.getLogger(__name__)

#: Built-in filters that never change ``_id``/``_tag`` by construction (they only drop
#: records, refuse reserved keys in their config, or restore them themselves;
#: ``rewrite_tag`` re-tags the records it emits and gives copies ids of their own, by
#: design), so the chain skips the check for them. Names are unique in a registry, so a
#: third-party filter cannot claim one.
KEEPS_RESERVED = frozenset({"grep", "throttle", "modify", "record_modifier", "parser",
                            "rewrite_tag"})

COUNTER = "reserved_kept"


class ReservedGuard:
    """What a filter was handed: restore ``_id`` (and ``_tag``) of those records after it."""

    __slots__ = ("ids", "records", "tags")

    def __init__(self, records: list[dict[str, Any]], keep_tag: bool) -> None:
        self.records = records[:]  # the list of references (the filter may reuse its input)
        self.ids = [r[ID_KEY] for r in records]
        self.tags = [r[TAG_KEY] for r in records] if keep_tag else None

    def restore(self, result: FilterResult) -> int:
        """Put back what the filter changed; returns how many records it had touched.

        New dicts in ``result`` whose ``_id`` is no input record's (or one another record
        of the batch has) are fixed or moved to ``result.rejected`` (module docstring)."""
        n = 0
        for r, rid in zip(self.records, self.ids, strict=True):
            v = r.get(ID_KEY)
            if v is not rid and v != rid:
                r[ID_KEY] = rid
                n += 1
        if self.tags is not None:
            for r, tag in zip(self.records, self.tags, strict=True):
                v = r.get(TAG_KEY)
                if v is not tag and v != tag:
                    r[TAG_KEY] = tag
                    n += 1
        if result.records != self.records:  # C-speed identity walk: the same, in place?
            n += self._new_records(result)
        return n

    def _new_records(self, result: FilterResult) -> int:
        out = result.records
        originals = {id(r) for r in self.records}
        if all(id(r) in originals for r in out):
            return 0  # some dropped or reordered, none new
        tags = dict(zip(self.ids, self.tags, strict=True)) if self.tags is not None else None
        known = set(self.ids)
        used = {r.get(ID_KEY) for r in out if id(r) in originals}
        positional = len(out) == len(self.records)
        kept: list[dict[str, Any]] = []
        n = 0
        for i, r in enumerate(out):
            if id(r) in originals or not isinstance(r, dict):
                kept.append(r)
                continue
            rid = r.get(ID_KEY)
            origin = _origin(rid, known) if rid not in used else None
            if origin is None:  # forged, missing, or another record's: one line, one id
                if not positional or self.ids[i] in used:
                    result.rejected.append(Rejection(
                        r, "a filter returned a new record without an _id of its own from "
                           "the batch; copy _id and _tag into the records it makes"))
                    n += 1
                    continue
                rid = origin = r[ID_KEY] = self.ids[i]
                n += 1
            used.add(rid)
            if tags is not None and r.get(TAG_KEY) != tags[origin]:
                r[TAG_KEY] = tags[origin]
                n += 1
            kept.append(r)
        if len(kept) != len(out):
            result.records = kept
        return n


def _origin(rid: Any, known: set[Any]) -> Any:
    """The input ``_id`` that ``rid`` is or derives from (``<_id>-<suffix>``), else None."""
    if rid in known:
        return rid
    while isinstance(rid, str) and "-" in rid:
        rid = rid.rsplit("-", 1)[0]
        if rid in known:
            return rid
    return None


def report_kept(filter_id: str, n: int, counters: Counter[str], limiter: RateLimiter) -> None:
    """Count ``n`` kept records of one batch and say so (once per batch, rate-limited)."""
    if not n:
        return
    counters[COUNTER] += n
    key = f"{filter_id}:reserved"
    if limiter.allow(key):
        more = limiter.take_suppressed(key)
        event(log, logging.WARNING, "processor_reserved_field_kept",
              f"filter {filter_id!r} changed _id or _tag of {n} record(s) in a batch"
              + (f" ({more} more batches since the last warning)" if more else "")
              + "; kept the pipeline's values (_id makes delivery exactly-once; change "
              "tags with rewrite_tag, keep your own id in another field)",
              filter=filter_id, records=n)
