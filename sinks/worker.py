"""A sink worker: the ``sink:<output>`` group on ``out``, delivery, fenced acks.

Records are decoded, selected by the output's ``match``, and handed to the output: while
every entry is wire version 2 as a :class:`~tailrace.wire.JsonBatch` (the processor's JSON,
decoded only if the output reads the records as maps), else as a list of maps. An
entry addressed to one output (field ``to``, written by ``tailrace dlq replay --output``)
is delivered by that output only, whatever its ``match``, and skipped (acked) by the
others. The output's outcome decides: ``Delivered`` -> ack (rejected records to the
dead-letter stream first); ``Retry`` -> back off (the output's policy) and retry only
what failed, as long as the lease is safe (a long outage holds the entries pending:
backpressure, never loss); ``Rejected`` -> dead-letter the batch. The ack and the
output's checkpoint go in one fenced script.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from tailrace.config import Config, OutputConfig
from tailrace.errors import RecordError
from tailrace.handler import BatchAbandoned, Entry, HandleResult, LeaseGuard
from tailrace.jsonbatch import JsonBatch
from tailrace.keys import sink_group
from tailrace.lifecycle import State, ThreadRecord
from tailrace.logs import RateLimiter, event
from tailrace.outcome import Delivered, Rejected, Rejection, Retry
from tailrace.plugins import OutputPlugin
from tailrace.retry import Backoff
from tailrace.scriptcalls import DeadLetter
from tailrace.tags import TagMatcher
from tailrace.wire import decode_processed

from .context import OutputContext

__all__ = ["ADDRESS_FIELD", "SinkHandler", "build_output"]

log = logging.getLogger(__name__)

#: Stream entry field naming the one output an entry is for (dead-letter replays).
ADDRESS_FIELD = b"to"


def build_output(config: Config, pc: OutputConfig) -> OutputPlugin:
    ctx = OutputContext(pc.id, config.data_dir / "sinks" / pc.id, config.resolve_path)
    return pc.plugin(pc.options, ctx)


class SinkHandler:
    """Delivers one output's records; the consumer loop owns the broker."""

    overlap_commits = False  # it writes to the store before its commit

    def __init__(self, config: Config, pc: OutputConfig, status: ThreadRecord) -> None:
        self.pc = pc
        self.group = sink_group(pc.id)
        self.output = build_output(config, pc)
        self.matcher = TagMatcher(pc.options.match, pc.options.match_regex)
        self.address = pc.id.encode()
        self.status = status  # its lifecycle entry (state, counters), not a log record
        status.set_state(State.IDLE, "waiting for records")  # the output is built
        self._limiter = RateLimiter()
        self._stats_seen: dict[str, int] = {}

    def on_committed(self, partition: int) -> None:
        """The last batch's commit is in Redis: outputs may drop what guarded it."""
        self.output.committed()

    def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        self.output.recover(checkpoints)

    def _dead(self, records: Sequence[dict[str, Any]], reason: str, source: str) -> DeadLetter:
        payload = msgpack.packb(list(records), use_bin_type=True, default=str)
        return DeadLetter("records", payload, self.group, self.pc.id, reason, source)

    def _rejections(self, rejected: list[Rejection], origin: dict[int, str],
                    out: list[DeadLetter]) -> None:
        """One dead letter per refused record, naming the entry it came from."""
        for rej in rejected:
            out.append(self._dead([rej.record], rej.reason, origin.get(id(rej.record), "")))

    def _select(self, batch: JsonBatch | list[dict[str, Any]]) -> JsonBatch | list[dict[str, Any]]:
        """The records of ``batch`` this output's ``match`` selects."""
        matcher = self.matcher
        if isinstance(batch, list):
            return [r for r in batch if matcher(r["_tag"])]
        tags = batch.tags
        if not tags or tags.count(tags[0]) == len(tags):  # one tag: one decision
            return batch if not tags or matcher(tags[0]) else batch.select([])
        verdict: dict[str, bool] = {}
        keep = []
        for i, t in enumerate(tags):
            ok = verdict.get(t)
            if ok is None:
                ok = verdict[t] = matcher(t)
            if ok:
                keep.append(i)
        return batch.select(keep)

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        res = HandleResult()
        parts: list[JsonBatch | list[dict[str, Any]]] = []
        taken: list[tuple[str, bytes]] = []  # (entry id, payload) of the entries in parts
        spans: list[tuple[int, str]] = []  # (records so far, entry id): where records came from
        count = 0
        for entry_id, fields in entries:
            if not fields:
                continue
            to = fields.get(ADDRESS_FIELD)
            if to is not None and to != self.address:
                continue  # a replay for another output
            try:
                batch = decode_processed(fields)
            except RecordError as exc:
                res.dead_letters.append(DeadLetter(
                    "records", fields.get(b"b", b"") or b"", self.group, "wire",
                    f"malformed processed entry: {exc}", entry_id.decode()))
                continue
            res.lines_in += len(batch)
            if not (self.matcher.matches_all or to is not None):
                batch = self._select(batch)
            parts.append(batch)
            taken.append((entry_id.decode(), fields.get(b"b", b"") or b""))
            count += len(batch)
            spans.append((count, entry_id.decode()))
        try:
            records: JsonBatch | list[dict[str, Any]] = _combine(parts)
        except RecordError as exc:
            return self._undecodable(res, taken, exc)
        everything = records
        origin: dict[int, str] = {}

        def where() -> dict[int, str]:
            if not origin and spans:
                lo = 0
                for hi, eid in spans:
                    for r in everything[lo:hi]:
                        origin[id(r)] = eid
                    lo = hi
            return origin

        backoff: Backoff | None = None  # made on a first retry only: it seeds a Random
        self.status.set_state(State.ACTIVE)
        while records:
            # Never write without a lease that surely holds; a stop still delivers the batch
            # in hand (the drain), only a retry's wait is cut short by it (below).
            guard.check_lease()
            try:
                outcome = self.output.write_batch(records)
            except RecordError as exc:  # a version-2 record that does not decode
                return self._undecodable(res, taken, exc)
            if isinstance(outcome, Delivered):
                if outcome.rejected:
                    self._rejections(outcome.rejected, where(), res.dead_letters)
                res.lines_out += len(records) - len(outcome.rejected)
                break
            if isinstance(outcome, Rejected):
                res.dead_letters.append(self._dead(records, outcome.reason, spans[0][1]))
                break
            assert isinstance(outcome, Retry)
            if outcome.rejected:
                self._rejections(outcome.rejected, where(), res.dead_letters)
            res.lines_out += len(records) - len(outcome.records) - len(outcome.rejected)
            records = outcome.records
            self.status.set_state(State.THROTTLED, f"retrying {len(records)} records: "
                                  f"{outcome.reason}")
            self.status.add("retries")
            if self._limiter.allow("retry"):
                event(log, logging.WARNING, "sink_delivery_retry",
                      f"{len(records)} records not delivered ({outcome.reason}); retrying "
                      "them after a backoff", output=self.pc.id, partition=partition)
            if backoff is None:
                backoff = self.output.backoff()
            if guard.stop.wait(backoff.next_delay()):
                raise BatchAbandoned("stop requested while retrying")
        self.status.set_state(State.IDLE)  # delivered: no longer throttled, whatever it was
        self._count_stats()
        res.checkpoint = self.output.checkpoint()
        return res

    def _undecodable(self, res: HandleResult, taken: list[tuple[str, bytes]],
                     exc: RecordError) -> HandleResult:
        """Dead-letter the entries of a batch whose records do not decode (outputs decode
        version-2 records on demand and do so before they write anything)."""
        for eid, payload in taken:
            res.dead_letters.append(DeadLetter("records", payload, self.group, "wire",
                                               f"malformed processed entry: {exc}", eid))
        return res

    def _count_stats(self) -> None:
        """Add the output's own counters (es: requests, conflicts, ...) to the lifecycle."""
        for name, value in self.output.stats.items():
            delta = value - self._stats_seen.get(name, 0)
            if delta:
                self.status.add(f"{self.pc.name}_{name}", delta)
                self._stats_seen[name] = value

    def close(self) -> None:
        self.output.close()


def _combine(parts: list[JsonBatch | list[dict[str, Any]]]) -> JsonBatch | list[dict[str, Any]]:
    """One batch of the entries' records: still encoded while every entry is version 2."""
    if parts and all(isinstance(p, JsonBatch) for p in parts):
        return JsonBatch.concat(parts)  # type: ignore[arg-type]
    records: list[dict[str, Any]] = []
    for p in parts:  # version-1 entries among them (an upgrade): records as maps
        records.extend(p.records() if isinstance(p, JsonBatch) else p)
    return records

