"""What a consumer does with one partition's batch: hand it to the handler, commit what
came out (fenced), count it; dead-letter what keeps failing; and, on taking a partition
over, claim what the previous owner had pending and dead-letter the poison among it.

Commits in flight: for a handler whose work lives only in Redis (``overlap_commits``: a
processor), the commit of a live read is *sent*, and its reply read only when the next
commit is due (:meth:`BatchWork.settle`): Redis runs it while the worker handles the next
entries, instead of the worker waiting for it. At most one commit is in flight, so commits
keep the order of the entries; its outcome is applied on the loop's thread before the next
commit and before anything that must see it (the loop settles at the start of any step
that does more than read live partitions). No thread: one that sends and parses needs the
GIL the handler holds (measured: it cost more than it saved).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from ..broker import BROKER_ERRORS
from ..errors import Fenced
from ..handler import BatchAbandoned, BatchHandler, Entry, HandleResult, LeaseGuard
from ..keys import Keys
from ..lifecycle import State, ThreadRecord
from ..logs import event
from ..scriptcalls import Scripts
from ..serviceconfig import ServiceConfig
from .backlog import OutputBacklog
from .lease import LeaseKeeper
from .recovery import claim_pending, over_delivered
from .table import Mode, Partition, PartitionTable

__all__ = ["BatchWork"]

log = logging.getLogger(__name__)

#: a commit sent, its reply not read yet: the partition, what it commits, and its outcome
_InFlight = tuple[Partition, HandleResult, Callable[[], int]]


class BatchWork:
    """The per-batch part of a :class:`~tailrace.consumer.loop.StreamConsumer` (its thread)."""

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts,
                 service: ServiceConfig, handler: BatchHandler, table: PartitionTable,
                 keeper: LeaseKeeper, backlog: OutputBacklog, status: ThreadRecord, *,
                 group: str, consumer: str, stage_in: str, stage_out: str, kind: str,
                 plugin: str, single_writer: bool) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts
        self.service = service
        self.handler = handler
        self.table = table
        self.keeper = keeper
        self.backlog = backlog
        self.status = status
        self.group = group
        self.me = consumer
        self.stage_in = stage_in
        self.stage_out = stage_out
        self.kind = kind
        self.plugin = plugin
        self.single_writer = single_writer
        # A partition whose last commit ran but was not confirmed by the replicas asked for
        # (WaitPolicy): nothing else moves until it is, or until a failover rolled it back.
        self.unconfirmed: int | None = None
        # Waiting for replicas (WaitPolicy) confirms commits one by one: no overlap then.
        self.overlap = handler.overlap_commits and not scripts.wait.replicas
        self._in_flight: _InFlight | None = None

    def take_over(self, part: Partition) -> None:
        """Take over everything the group still has pending on this partition."""
        stream = self.keys.stream(self.stage_in, part.number)
        claimed = claim_pending(self.client, stream, self.group, self.me)
        poison = over_delivered(self.client, stream, self.group, self.me,
                                self.service.max_deliveries)
        if poison:
            last = next((part.last_error[i] for i in poison if i in part.last_error), None)
            n = self.scripts.dead_letter_pending(
                part.number, self.group, part.owner, stage_in=self.stage_in, kind=self.kind,
                stage=self.group, ids=poison, plugin=self.plugin,
                reason=f"delivered more than {self.service.max_deliveries} times without being "
                f"committed (it keeps crashing or stalling workers); dead-lettered as poison"
                + (f"; last error here: {last}" if last else ""),
            )
            self.status.add("dead_letters", n)
            event(log, logging.ERROR, "consumer_poison_dead_lettered",
                  f"dead-lettered {n} poison entries", group=self.group, partition=part.number)
        if claimed:
            event(log, logging.INFO, "consumer_pending_claimed",
                  f"took over {claimed} pending entries", group=self.group,
                  partition=part.number)

    def sync_handler(self, partition: int) -> None:
        """Hand the handler the committed checkpoints, to return to that state."""
        parts = range(self.service.partitions) if self.single_writer else [partition]
        pipe = self.client.pipeline(transaction=False)
        for q in parts:
            pipe.hgetall(self.keys.checkpoint(q, self.group))
        self.handler.on_acquire(partition, pipe.execute())

    def process(self, part: Partition, entries: list[Entry], stop: threading.Event) -> None:
        guard = LeaseGuard(self.table, part.number, stop)
        self.status.set_state(State.ACTIVE)
        try:
            result = self.handler.handle(part.number, entries, guard)
        except BROKER_ERRORS:
            raise
        except Exception as exc:
            self.settle()  # the entries before these first: committed, or their fate known
            self._failed(part, entries, exc, stop)
            return
        self.table.succeeded(part, entries[0][0])
        self._commit(part, entries, result)

    def settle(self) -> None:
        """Wait for the commit in flight, if any, and apply its outcome here."""
        if self._in_flight is None:
            return
        part, result, outcome = self._in_flight
        self._in_flight = None
        self._finish(part, result, outcome)

    def close(self) -> None:
        """Settle the commit in flight (its outcome only logged now)."""
        try:
            self.settle()
        except Exception as exc:  # stopping: the entries stay pending for the next owner
            event(log, logging.WARNING, "consumer_last_commit_failed",
                  f"the last commit before stopping failed: {exc!r}", group=self.group)

    def _failed(self, part: Partition, entries: list[Entry], exc: Exception,
                stop: threading.Event) -> None:
        """The handler raised: leave the entries pending, or dead-letter them once they
        failed ``max_deliveries`` times. A handler bug must not kill the worker or lose them."""
        p = part.number
        if isinstance(exc, BatchAbandoned):
            event(log, logging.INFO, "consumer_batch_abandoned",
                  f"left {len(entries)} entries pending: {exc}", group=self.group, partition=p)
            self.table.to_history(part)
            return
        first = entries[0][0]
        n = self.table.failed(part, first, repr(exc))
        self.status.add("errors")
        event(log, logging.ERROR, "consumer_batch_error",
              f"processing entries {first.decode()}.. failed ({n}/"
              f"{self.service.max_deliveries}): {exc!r}", group=self.group, partition=p)
        if n >= self.service.max_deliveries:
            self.table.succeeded(part, first)
            done = self.scripts.dead_letter_pending(
                p, self.group, part.owner, stage_in=self.stage_in, kind=self.kind,
                stage=self.group, ids=[e[0] for e in entries], plugin=self.plugin,
                reason=f"processing failed {n} times: {exc!r}",
            )
            self.status.add("dead_letters", done)
        else:
            self.table.to_history(part)
            self.table.request_resync()  # the handler may have half-done work to roll back
            stop.wait(min(0.1 * 2**n, 5.0))

    def _commit(self, part: Partition, entries: list[Entry], result: HandleResult) -> None:
        """Commit one batch (fenced: outputs, dead letters, checkpoint, acks) and count it;
        a live batch of an overlapping handler is left in flight."""
        self.settle()
        if self.table.get(part.number) is not part:
            return  # lost or fenced meanwhile: the entries stay pending for its owner now
        if self.overlap and part.mode is Mode.LIVE:
            self._in_flight = (part, result, self._send(part, entries, result, True))
            return
        self._finish(part, result, lambda: self._send(part, entries, result, False)())

    def _send(self, part: Partition, entries: list[Entry], result: HandleResult,
              in_flight: bool) -> Callable[[], int]:
        return self.scripts.send_commit(
            part.number, self.group, part.owner, stage_in=self.stage_in,
            ids=[e[0] for e in entries], outputs=result.outputs, stage_out=self.stage_out,
            dead_letters=result.dead_letters, checkpoint=result.checkpoint,
            dlq_maxlen=self.service.dlq_max_entries, in_flight=in_flight,
        )

    def _finish(self, part: Partition, result: HandleResult, outcome: Callable[[], int]) -> None:
        """Apply a commit's outcome (``outcome`` returns the output's length or raises)."""
        p = part.number
        try:
            outlen = outcome()
        except BROKER_ERRORS:
            # Not confirmed (NotReplicated), or its answer was lost: it may have run.
            if self.scripts.wait.replicas:
                self.unconfirmed = p
            raise
        except Fenced as exc:
            event(log, logging.WARNING, "consumer_commit_fenced", str(exc), group=self.group,
                  partition=p)
            if self.table.fenced(part):
                self.keeper.release([part.lease])
            # A handler with effects outside Redis (the file output) must return to the
            # committed state before its next write: what it did for this batch is not.
            self.sync_handler(p)
            return
        self.handler.on_committed(p)  # e.g. the file output forgets journal entries covered
        st = self.status
        st.add("batches")
        st.add("lines_in", result.lines_in)
        st.add("lines_out", result.lines_out)
        st.add("bytes_in", result.bytes_in)
        if result.dead_letters:
            st.add("dead_letters", len(result.dead_letters))
        self.backlog.committed(part, outlen)
