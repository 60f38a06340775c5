"""The worker loop every stream consumer shares (processors on ``raw``, sinks on ``out``).

It owns the broker: leases (through :class:`~tailrace.consumer.lease.LeaseKeeper`),
reading (:class:`~tailrace.consumer.reads.Reads`), recovering a previous owner's pending
entries, fenced commits, poison entries, backpressure and trimming. What a worker *does*
with a batch is a :class:`~tailrace.handler.BatchHandler`, pure over the entries, which
never talks to Redis. What it knows about each partition it owns is in the
:class:`~tailrace.consumer.table.PartitionTable`, which makes every change of mode.

One step reads top to bottom: reconcile (apply a requested resync, hand back the extras
once no read covers them) -> recover (claim the group's pending entries to itself with
XAUTOCLAIM, min idle 0: the lease, not idleness, says the old owner is gone; dead-letter
those delivered more than ``max_deliveries`` times; hand the handler the committed state)
-> history (process its own pending entries, one at a time) -> live (read new ones,
``>``) -> trim. After a broker error every partition recovers again, because a lost
XREADGROUP reply leaves entries pending that this worker never saw and the fate of the
last commit is unknown.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from ..broker import BROKER_ERRORS
from ..errors import BrokerUnavailable, Fenced
from ..handler import BatchHandler
from ..keys import Keys
from ..lifecycle import Lifecycle, State
from ..logs import RateLimiter, event
from ..retry import Backoff
from ..scriptcalls import Scripts, WaitPolicy
from ..serviceconfig import ServiceConfig
from ..topology import refresh_topology
from .backlog import RECHECK_S as _PAUSE_RECHECK_S
from .backlog import OutputBacklog
from .batches import BatchWork
from .lanes import LaneReply
from .lease import LeaseKeeper
from .reads import Reads
from .recovery import group_lost, recreate_group
from .table import Mode, PartitionTable, Ticket

__all__ = ["StreamConsumer"]

log = logging.getLogger(__name__)
_AWAIT_SLICE_S = 0.05  # how soon a worker that owns no partition notices a stop

DEFAULT_READ_COUNT = 2  # entries per partition per read: each holds thousands of lines
DEFAULT_BLOCK_MS = 1000
DEFAULT_TRIM_INTERVAL_S = 2.0


class StreamConsumer:
    """Runs one consumer group worker until ``stop`` is set, then releases its leases."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        service: ServiceConfig,
        group: str,
        handler: BatchHandler,
        lifecycle: Lifecycle,
        *,
        stage_in: str,
        stage_out: str = "out",
        single_writer: bool = False,
        kind: str = "raw",
        read_count: int = DEFAULT_READ_COUNT,
        block_ms: int = DEFAULT_BLOCK_MS,
        backlog_limit: int | None = None,
        trim_interval_s: float = DEFAULT_TRIM_INTERVAL_S,
        plugin: str = "",
    ) -> None:
        self.client = client
        # What the dead letters of entries the handler itself failed on name (an output's
        # id; the group when not given), so `dlq list --plugin` finds them too.
        self.plugin = plugin or group
        self.keys = keys
        self.service = service
        self.group = group
        self.handler = handler
        self.lifecycle = lifecycle
        self.stage_in = stage_in
        self.trim_interval_s = trim_interval_s
        replication = service.replication
        self.scripts = Scripts(client, keys, wait=WaitPolicy(replication.wait_replicas,
                                                             replication.wait_timeout_ms))
        self.me = lifecycle.id
        self.status = lifecycle.thread("consumer")
        self.table = PartitionTable(single_writer=single_writer)
        self.keeper = LeaseKeeper(
            client, self.scripts, keys, group, self.me, service.partitions,
            service.lease_ttl_ms, service.heartbeat_ms,
            lifecycle.thread("lease-keeper", housekeeping=True), self.table,
            single_writer=single_writer,
        )
        self.reads = Reads(client, keys, self.table, group=group, consumer=self.me,
                           stage_in=stage_in, count=read_count, block_ms=block_ms)
        self._backlog = OutputBacklog(
            client, keys, self.table, stage_out,
            service.backlog.max_entries_per_partition if backlog_limit is None else backlog_limit,
        )
        self.work = BatchWork(
            client, keys, self.scripts, service, handler, self.table, self.keeper,
            self._backlog, self.status, group=group, consumer=self.me, stage_in=stage_in,
            stage_out=stage_out, kind=kind, plugin=self.plugin, single_writer=single_writer,
        )
        self._next_trim = 0.0
        self._limiter = RateLimiter()

    # -- loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        self.keeper.start()
        backoff = Backoff()
        failed: str | None = None
        try:
            while not stop.is_set():
                try:
                    self._step(stop)
                    backoff.reset()
                except redis.exceptions.OutOfMemoryError as exc:
                    self._redis_full(exc, stop)
                except BROKER_ERRORS as exc:
                    self._broker_error(exc)
                    stop.wait(backoff.next_delay())
                except Fenced as exc:
                    self._drop_fenced(exc)
                except redis.exceptions.ResponseError as exc:
                    if not group_lost(exc):
                        raise
                    # The broker lost the group (a failover to a replica that never had it,
                    # or to an empty node): recreate it, then start over from pending.
                    recreate_group(self.client, self.keys, self.stage_in, self.group,
                                   range(self.service.partitions))
                    self.table.resync_all()
                    self.reads.reset()
                    stop.wait(backoff.next_delay())
            self._drain_read_ahead(stop)
        except BaseException as exc:
            # A bug escaped the loop: say so (status, /health) before the thread ends; the
            # leases are released below and another worker (or a restart) takes over.
            failed = f"{type(exc).__name__}: {exc}"
            event(log, logging.ERROR, "consumer_failed", f"the consumer loop died: {failed}",
                  group=self.group)
            raise
        finally:
            self.status.set_state(State.DRAINING)
            self.work.close()  # the commit in flight lands before the leases go back
            self.reads.close()
            self.keeper.leave()
            self.lifecycle.partitions[self.group] = []
            self.status.set_state(State.FAILED if failed else State.STOPPED, failed or "")

    def _drain_read_ahead(self, stop: threading.Event) -> None:
        """Stopping: handle and commit what the read sent ahead brought (the batch in hand).

        Its entries were delivered to this worker; left pending, they would wait for the
        next owner's takeover. The read is cut short first (``CLIENT UNBLOCK``), so a stop
        never waits for new entries."""
        if self.reads.idle():
            return
        failed: BaseException | None = None
        try:
            self._handle_replies(self.reads.cut(), stop)
        except BROKER_ERRORS as exc:
            failed = exc
        except Fenced as exc:
            failed = exc
        if failed is not None:
            event(log, logging.WARNING, "consumer_drain_failed",
                  f"the entries read ahead stay pending for the next owner: {failed!r}",
                  group=self.group)

    def _broker_error(self, exc: BaseException) -> None:
        self.status.set_state(State.BROKER_DOWN, str(exc))
        if self._limiter.allow("broker"):
            event(log, logging.WARNING, "consumer_broker_error",
                  f"broker unreachable, retrying with backoff: {exc}", group=self.group)
        self.table.resync_all()
        self.reads.reset()  # lanes reconnect, to the nodes that serve them then
        try:
            refresh_topology(self.client)
        except BROKER_ERRORS:
            pass  # the next step fails again and backs off further

    def _redis_full(self, exc: BaseException, stop: threading.Event) -> None:
        """Redis refused a commit for want of memory (maxmemory): backpressure, not an
        outage. The refused script wrote nothing; its entries are still pending here and are
        redone once sinks have freed memory. Look again soon, without a growing backoff, and
        trim what was acknowledged: that frees memory too."""
        self.status.set_state(State.THROTTLED, str(exc))
        if self._limiter.allow("full"):
            event(log, logging.WARNING, "consumer_redis_full", str(exc), group=self.group)
        self.table.resync_all()  # a sink's output may hold what the refused commit covered
        try:
            self._next_trim = 0.0
            self._trim()
        except BROKER_ERRORS:
            pass
        stop.wait(_PAUSE_RECHECK_S)

    def _drop_fenced(self, exc: Fenced) -> None:
        """A recovery step or a dead-lettering found the lease taken over: the partition is
        someone else's now; forget it (the keeper takes it again if it is free) and go on."""
        event(log, logging.WARNING, "consumer_partition_fenced", str(exc), group=self.group,
              partition=exc.partition)
        part = self.table.get(exc.partition)
        if part is not None and self.table.fenced(part):
            self.keeper.release([part.lease])

    def _step(self, stop: threading.Event) -> None:
        if not self.table.all_live():
            # Everything below but a read of live partitions must see the last commit's
            # outcome (a release, a claim, history's re-read of pending entries).
            self.work.settle()
        self._confirm()
        self._reconcile()
        self._recover()
        self.lifecycle.partitions[self.group] = self.table.numbers()
        if not len(self.table):
            self.status.set_state(State.IDLE, "no partitions owned")
            self._await_partitions(stop)
            return
        # A partition whose lease could not be renewed lately (its node, or the output-wide
        # lease's node, is failing over) waits: reading it now would only deliver entries
        # to abandon, again and again, each time counting as a delivery (toward poison).
        usable = {p for p in self.table.numbers() if self.table.valid(p)}
        if not usable:
            self.work.settle()
            self.status.set_state(State.ACTIVE, "waiting for lease renewals to go through")
            stop.wait(_PAUSE_RECHECK_S)
            return
        if self._history(usable, stop):
            return
        if self._live(usable, stop):
            self._trim()

    def _confirm(self) -> None:
        if self.work.unconfirmed is not None:
            # Going on with other partitions now could commit, on other nodes, state that
            # comes after this commit (a file output's checkpoint covering its bytes); if a
            # failover then lost this one, it would be redone after them.
            self.scripts.confirm(self.work.unconfirmed)
            self.work.unconfirmed = None

    def _reconcile(self) -> None:
        """Apply a requested resync, and hand back the extras the keeper asked for.

        No read may be in flight on a partition that is handed back: a read served after
        the release would leave entries pending on this worker that the next owner, which
        claims pending entries only when it takes the partition, never sees.
        """
        self.table.reconcile()
        self._backlog.recheck()
        self.reads.settle(self.reads.lanes_of(self.table.readable(self.table.numbers())))
        released = self.table.release(self.reads.busy())
        self.keeper.release([part.lease for part in released])

    def _recover(self) -> None:
        """Bring every RECOVERING partition to history: take over what the group still has
        pending on it (once per acquisition), then return the handler to the committed state."""
        for part in self.table.partitions(Mode.RECOVERING):
            try:
                if not part.claimed:
                    self.work.take_over(part)
                    self.table.claimed(part)
                self.work.sync_handler(part.number)
            except Fenced as exc:
                self._drop_fenced(exc)
                continue
            self.table.recovered(part)

    def _history(self, usable: set[int], stop: threading.Event) -> bool:
        """Process pending entries of the partitions re-reading them; False when none does."""
        history = [part for part in self.table.partitions(Mode.HISTORY) if part.number in usable]
        if not history:
            return False
        self.status.set_state(State.ACTIVE, "recovering pending entries")
        for part in history:
            entries = self.reads.pending(part)
            if not entries:
                self.table.drained(part)
                continue
            self.work.process(part, entries, stop)
        return True

    def _live(self, usable: set[int], stop: threading.Event) -> bool:
        """Read new entries of the live, unpaused partitions and process them; False when
        every one is paused by its output backlog."""
        self._backlog.recheck()
        lanes = self.reads.lanes_of(self.table.readable(usable))
        self.reads.settle(lanes)
        if not lanes and self.reads.idle():
            self.work.settle()
            self.status.set_state(State.THROTTLED, "output backlog over its limit")
            stop.wait(_PAUSE_RECHECK_S)
            return False
        replies = self.reads.new(lanes)
        if not any(r.result for r in replies):
            self.status.set_state(State.IDLE)
        elif all(r.error is None for r in replies):
            # Entries came: more are likely waiting. Redis serves the next read while these
            # are handled (a reply that turns out stale is dropped by its ticket).
            self.reads.prefetch(lanes)
        self._handle_replies(replies, stop)
        return True

    def _await_partitions(self, stop: threading.Event) -> None:
        """Up to a heartbeat, until the keeper takes partitions or a stop is asked for.

        At start-up the keeper's first tick takes them a few ms after this loop's first
        look: a flat heartbeat wait here was most of the time to a first line."""
        gained = self.keeper.gained
        deadline = time.monotonic() + self.keeper.heartbeat_s
        while not gained.is_set() and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            gained.wait(min(left, _AWAIT_SLICE_S))
        gained.clear()

    def _handle_replies(self, replies: list[LaneReply], stop: threading.Event) -> None:
        """Process what reads returned, for partitions the table says the reply is for."""
        failure: BaseException | None = None
        for reply in replies:
            ticket: Ticket = reply.tag
            if reply.error is not None:
                # Entries may have been delivered without reaching us: re-read pending.
                self.table.read_failed(ticket)
                if self._nogroup(reply.error, ticket):
                    continue
                error = reply.error
                if isinstance(error, redis.exceptions.AskError):  # MOVED too
                    error = BrokerUnavailable(
                        f"partitions {ticket.partitions} moved to another Redis node (slot "
                        f"{error.slot_id} is at {error.node_addr} now: a failover or a slot "
                        "move); re-reading the cluster's slot map")
                failure = failure or error
                continue
            for key, entries in reply.result or []:
                if not entries:
                    continue
                part = self.table.accept(ticket, self.keys.partition_of(key))
                if part is not None:
                    self.work.process(part, entries, stop)
        if failure is not None:
            if isinstance(failure, BROKER_ERRORS):
                raise failure
            raise RuntimeError(f"reading group {self.group}: {failure!r}") from failure

    def _nogroup(self, error: BaseException, ticket: Ticket) -> bool:
        """Recreate the group when a read found it missing; True when that was the error."""
        if not (isinstance(error, redis.exceptions.ResponseError) and group_lost(error)):
            return False
        recreate_group(self.client, self.keys, self.stage_in, self.group, ticket.partitions)
        return True

    def _trim(self) -> None:
        now = time.monotonic()
        if now < self._next_trim:
            return
        self._next_trim = now + self.trim_interval_s
        for p in self.table.numbers():
            self.scripts.trim(self.keys.stream(self.stage_in, p))
