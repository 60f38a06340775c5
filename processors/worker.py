"""A processor worker: the ``processors`` group on ``raw``, the filter chain, fenced commits.

Each raw entry becomes one processed entry on the partition's ``out`` stream (so output
order follows input order); records a filter rejects and entries that do not decode go to
the partition's dead-letter stream with the reason. All of it is committed with the input
acks in one script (:data:`tailrace.scripts.COMMIT`). What the filters count per batch
(unmatched lines, regex timeouts, throttled records, filter errors) is added to the
worker's lifecycle counters, so ``tailrace status`` shows it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgpack

from tailrace.config import Config
from tailrace.errors import RecordError
from tailrace.handler import Entry, HandleResult, LeaseGuard
from tailrace.lifecycle import ThreadRecord
from tailrace.logs import RateLimiter, event
from tailrace.outcome import Rejection
from tailrace.plugins import Record
from tailrace.ratelimit import RateLimits
from tailrace.scriptcalls import DeadLetter
from tailrace.wire import decode_raw, encode_processed

from .chain import Chain

__all__ = ["ProcessorHandler"]

log = logging.getLogger(__name__)
STAGE = "processor"


class ProcessorHandler:
    """Raw entries -> processed entries (+ dead letters).

    No broker access of its own: shared services the filters need (``rate_limits``) are
    handed in by whoever owns the broker.
    """

    overlap_commits = True  # no state outside Redis: Redis commits while the next is parsed

    def __init__(self, config: Config, status: ThreadRecord, *,
                 rate_limits: RateLimits | None = None) -> None:
        self.chain = Chain(config, rate_limits=rate_limits)
        self.status = status  # its lifecycle entry (state, counters), not a log record
        self._limiter = RateLimiter()

    def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        return None  # processors keep no state outside Redis

    def on_committed(self, partition: int) -> None:
        return None  # nothing outside Redis to let go of

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        res = HandleResult()
        for entry_id, fields in entries:
            if not fields:
                continue  # trimmed while pending: nothing left to do
            try:
                batch = decode_raw(fields)
            except RecordError as exc:
                res.dead_letters.append(DeadLetter(
                    "raw", fields.get(b"b", b"") or b"", STAGE, "wire",
                    f"malformed raw entry: {exc}", entry_id.decode()))
                if self._limiter.allow("decode"):
                    event(log, logging.ERROR, "processor_entry_decode_error",
                          f"entry {entry_id.decode()} of partition {partition} does not decode "
                          f"({exc}); dead-lettered", partition=partition)
                continue
            result = self.chain.run(batch)
            res.lines_in += len(batch.lines)
            res.bytes_in += batch.end - batch.start
            if result.invalid_utf8:
                self.status.add("invalid_utf8_lines", result.invalid_utf8)
            for name, n in result.counters.items():
                self.status.add(f"filter_{name}", n)
            records = result.records
            if records:
                try:
                    payload = encode_processed(records)
                except (TypeError, ValueError, OverflowError):
                    records, unencodable = _split_encodable(records)
                    result.rejected.extend(unencodable)
                    payload = encode_processed(records) if records else b""
                if records:
                    res.outputs.append(payload)
                    res.lines_out += len(records)
            for fid, rej in result.rejected:
                res.dead_letters.append(DeadLetter(
                    "records", msgpack.packb([rej.record], use_bin_type=True, default=repr),
                    STAGE, fid, rej.reason, entry_id.decode()))
        return res

    def close(self) -> None:
        return None


def _split_encodable(records: list[Record]) -> tuple[list[Record], list[tuple[str, Rejection]]]:
    """Records the wire format can encode, and the others as rejections (e.g. a python
    filter put a set in a record): one bad record must not fail the batch forever."""
    good: list[Record] = []
    bad: list[tuple[str, Rejection]] = []
    for r in records:
        try:
            encode_processed([r])
        except (TypeError, ValueError, OverflowError) as exc:
            bad.append(("wire", Rejection(r, f"record cannot be encoded for the out stream "
                                             f"({exc}); values must be text, numbers, bools, "
                                             "None, lists or maps, and '_id' and '_tag' "
                                             "text")))
        else:
            good.append(r)
    return good, bad

