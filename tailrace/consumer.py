"""The worker loop every stream consumer shares (processors on ``raw``, sinks on ``out``).

It owns the broker: leases (through :class:`LeaseKeeper`), reading with XREADGROUP,
recovering a previous owner's pending entries, fenced commits, poison entries,
backpressure and trimming. What a worker *does* with a batch is a :class:`BatchHandler`,
pure over the entries, which never talks to Redis.

Per partition the loop is: acquire -> claim the group's pending entries to itself
(XAUTOCLAIM, min idle 0: the lease, not idleness, says the old owner is gone) -> dead-letter
those delivered more than ``max_deliveries`` times -> process its own pending entries
("history") -> read new ones (``>``). After a broker error every partition goes back to
history, because a lost XREADGROUP reply leaves entries pending that this worker never saw.

New entries are read by :class:`tailrace.readers.LaneReads`: on one server a single
blocking XREADGROUP covers every live partition; on a Redis Cluster each partition has its
own blocking read (the cluster refuses commands across slots), and the loop wakes up when
any of them answers. A read in flight is cancelled before its partition is released or
goes back to history, and each read carries the partition's *generation* (bumped whenever
the partition leaves live mode), so a reply that raced such a change is dropped and the
partition re-reads its pending entries instead of processing anything twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, cast

import redis

from .backlog import RECHECK_S as _PAUSE_RECHECK_S
from .backlog import OutputBacklog
from .broker import BROKER_ERRORS
from .config import ServiceConfig
from .errors import BrokerUnavailable, Fenced
from .handler import BatchAbandoned, BatchHandler, Entry, HandleResult, LeaseGuard
from .keys import Keys
from .lease import LeaseKeeper, OwnedPartition
from .lifecycle import Lifecycle, State
from .logs import RateLimiter, event
from .readers import LaneReads, LaneReply
from .recovery import claim_pending, group_lost, over_delivered, recreate_group
from .retry import Backoff
from .scriptcalls import Scripts, WaitPolicy
from .topology import DEFAULT_NODE, is_cluster, refresh_topology

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
        self.stage_out = stage_out
        self.kind = kind
        self.read_count = read_count
        self.block_ms = block_ms
        self.trim_interval_s = trim_interval_s
        replication = service.replication
        self.scripts = Scripts(client, keys, wait=WaitPolicy(replication.wait_replicas,
                                                             replication.wait_timeout_ms))
        self.me = lifecycle.id
        self.record = lifecycle.thread("consumer")
        self.keeper = LeaseKeeper(
            client, self.scripts, keys, group, self.me, service.partitions,
            service.lease_ttl_ms, service.heartbeat_ms,
            lifecycle.thread("lease-keeper", housekeeping=True),
            single_writer=single_writer,
        )
        self.single_writer = single_writer
        self._mode: dict[int, str] = {}  # partition -> "history" | "live"
        self._gen: dict[int, int] = {}  # partition -> bumped each time it leaves live mode
        self._reads = LaneReads(client, group, self.me, count=read_count, block_ms=block_ms)
        self._cluster = is_cluster(client)
        self._resync = False  # after a broker error: re-run recovery on owned partitions
        self._backlog = OutputBacklog(
            client, keys, stage_out,
            service.backlog.max_entries_per_partition if backlog_limit is None else backlog_limit,
        )
        self._failures: dict[bytes, int] = {}
        self._last_error: dict[bytes, str] = {}  # entry id -> why it failed here last
        # A partition whose last commit ran but was not confirmed by the replicas asked for
        # (WaitPolicy): nothing else moves until it is, or until a failover rolled it back.
        self._unconfirmed: int | None = None
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
                    self.record.set_state(State.BROKER_DOWN, str(exc))
                    if self._limiter.allow("broker"):
                        event(log, logging.WARNING, "consumer_broker_error",
                              f"broker unreachable, retrying with backoff: {exc}",
                              group=self.group)
                    for p in list(self._mode):
                        self._to_history(p)
                    self._resync = True
                    self._reads.reset()  # lanes reconnect, to the nodes that serve them then
                    try:
                        refresh_topology(self.client)
                    except BROKER_ERRORS:
                        pass  # the next step fails again and backs off further
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
                    for p in list(self._mode):
                        self._to_history(p)
                    self._resync = True
                    self._reads.reset()
                    stop.wait(backoff.next_delay())
        except BaseException as exc:
            # A bug escaped the loop: say so (status, /health) before the thread ends; the
            # leases are released below and another worker (or a restart) takes over.
            failed = f"{type(exc).__name__}: {exc}"
            event(log, logging.ERROR, "consumer_failed", f"the consumer loop died: {failed}",
                  group=self.group)
            raise
        finally:
            self.record.set_state(State.DRAINING)
            self._reads.close()
            self.keeper.leave()
            self.lifecycle.partitions[self.group] = []
            self.record.set_state(State.FAILED if failed else State.STOPPED, failed or "")

    def _redis_full(self, exc: BaseException, stop: threading.Event) -> None:
        """Redis refused a commit for want of memory (maxmemory): backpressure, not an
        outage. The refused script wrote nothing; its entries are still pending here and are
        redone once sinks have freed memory. Look again soon, without a growing backoff, and
        trim what was acknowledged: that frees memory too."""
        self.record.set_state(State.THROTTLED, str(exc))
        if self._limiter.allow("full"):
            event(log, logging.WARNING, "consumer_redis_full", str(exc), group=self.group)
        for p in list(self._mode):
            self._to_history(p)
        self._resync = True  # a sink's output may hold what the refused commit covered
        try:
            self._next_trim = 0.0
            self._maybe_trim(self.keeper.owned())
        except BROKER_ERRORS:
            pass
        stop.wait(_PAUSE_RECHECK_S)

    def _drop_fenced(self, exc: Fenced) -> None:
        """A recovery step or a dead-lettering found the lease taken over: the partition is
        someone else's now; forget it (the keeper takes it again if it is free) and go on."""
        event(log, logging.WARNING, "consumer_partition_fenced", str(exc), group=self.group,
              partition=exc.partition)
        self._mode.pop(exc.partition, None)
        self._gen[exc.partition] = self._gen.get(exc.partition, 0) + 1
        self.keeper.release([exc.partition])

    def _to_history(self, p: int) -> None:
        """Send ``p`` back to its pending entries; replies of reads issued before are stale."""
        self._mode[p] = "history"
        self._gen[p] = self._gen.get(p, 0) + 1

    def _step(self, stop: threading.Event) -> None:
        if self._unconfirmed is not None:
            # Going on with other partitions now could commit, on other nodes, state that
            # comes after this commit (a file output's checkpoint covering its bytes); if a
            # failover then lost this one, it would be redone after them.
            self.scripts.confirm(self._unconfirmed)
            self._unconfirmed = None
        owned = self.keeper.owned()
        for p in [p for p in self._mode if p not in owned]:
            del self._mode[p]
            self._gen[p] = self._gen.get(p, 0) + 1
        acquired = [p for p in self.keeper.take_acquired() if p in owned]
        # After a broker error or a handler failure the fate of the last commit is unknown:
        # the handler returns to the committed state (no claim: the entries are ours).
        resync = sorted(set(owned) - set(acquired)) if self._resync else []
        for p in resync:
            self._to_history(p)
        for p in acquired:
            self._to_history(p)
        extras = sorted(self.keeper.extras() & set(owned))
        # No read may be in flight on a partition that is handed back: a read served after
        # the release would leave entries pending on this worker that the next owner, which
        # claims pending entries only when it takes the partition, never sees.
        self._settle_reads(self._live_lanes(owned, exclude=set(extras)))
        if extras:
            self.keeper.release(extras)
        for p in extras:
            self._mode.pop(p, None)
            self._gen[p] = self._gen.get(p, 0) + 1
            owned.pop(p, None)
        for p in acquired:
            if p in owned:
                try:
                    self._recover(owned[p])
                except Fenced as exc:
                    self._drop_fenced(exc)
                    owned.pop(p, None)
        for p in resync:
            if p in owned:
                self._sync_handler(p)
        self._resync = False
        self.lifecycle.partitions[self.group] = sorted(owned)
        if not owned:
            self.record.set_state(State.IDLE, "no partitions owned")
            self._await_partitions(stop)
            return
        # A partition whose lease could not be renewed lately (its node, or the output-wide
        # lease's node, is failing over) waits: reading it now would only deliver entries
        # to abandon, again and again, each time counting as a delivery (toward poison).
        usable = {p for p in owned if self.keeper.valid(p)}
        if not usable:
            self.record.set_state(State.ACTIVE, "waiting for lease renewals to go through")
            stop.wait(_PAUSE_RECHECK_S)
            return
        history = [p for p in owned if self._mode.get(p) == "history" and p in usable]
        if history:
            self.record.set_state(State.ACTIVE, "recovering pending entries")
            for p in history:
                # One entry at a time: an entry that crashes the worker (poison) then piles
                # up deliveries alone, and the entries read together with it get committed
                # instead of being dead-lettered with it.
                resp: Any = self.client.xreadgroup(
                    self.group, self.me, {self.keys.stream(self.stage_in, p): "0"},
                    count=1,
                )
                entries = resp[0][1] if resp else []
                if not entries:
                    self._mode[p] = "live"
                    continue
                self._process(owned[p], entries, stop)
            return
        lanes = self._live_lanes(owned, exclude=set(owned) - usable)
        self._settle_reads(lanes)
        if not lanes and not self._reads.in_flight() and not self._reads.has_ready():
            self.record.set_state(State.THROTTLED, "output backlog over its limit")
            stop.wait(_PAUSE_RECHECK_S)
            return
        replies = self._read_live(lanes)
        if not any(r.result for r in replies):
            self.record.set_state(State.IDLE)
        self._handle_replies(replies, owned, stop)
        self._maybe_trim(owned)

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

    # -- live reads -----------------------------------------------------------------------
    def _live_lanes(self, owned: Mapping[int, OwnedPartition],
                    exclude: set[int] | None = None) -> dict[str, list[int]]:
        """Lane -> the live, unpaused partitions it reads (one lane off-cluster)."""
        live = [p for p in self._backlog.unpaused(owned)
                if self._mode.get(p) == "live" and not (exclude and p in exclude)]
        if not self._cluster:
            return {DEFAULT_NODE: sorted(live)} if live else {}
        return {self.keys.stream(self.stage_in, p): [p] for p in live}

    def _settle_reads(self, lanes: Mapping[str, list[int]]) -> None:
        """Cancel every read in flight that does not cover exactly its lane's partitions."""
        for lane, streams in self._reads.in_flight().items():
            wanted = {self.keys.stream(self.stage_in, p) for p in lanes.get(lane, ())}
            if streams != wanted:
                self._reads.cancel(lane)

    def _read_live(self, lanes: Mapping[str, list[int]]) -> list[LaneReply]:
        """Start a read on every idle lane; return what arrived (waiting up to a block)."""
        in_flight = self._reads.in_flight()
        if len(lanes) == 1 and not in_flight and not self._reads.has_ready():
            # The common single-server case: one blocking call on this thread.
            ((lane, parts),) = lanes.items()
            tag = {p: self._gen.get(p, 0) for p in parts}
            resp = cast(Any, self.client.xreadgroup(
                self.group, self.me, {self.keys.stream(self.stage_in, p): ">" for p in parts},
                count=self.read_count, block=self.block_ms,
            ))
            return [LaneReply(lane, tag, result=resp or [])]
        for lane, parts in lanes.items():
            if lane not in in_flight:
                self._reads.issue(lane, [self.keys.stream(self.stage_in, p) for p in parts],
                                  {p: self._gen.get(p, 0) for p in parts})
        return self._reads.collect(self.block_ms / 1000 + 1.0)

    def _handle_replies(self, replies: list[LaneReply], owned: Mapping[int, OwnedPartition],
                        stop: threading.Event) -> None:
        """Process what reads returned, for partitions still live since the read began."""
        failure: BaseException | None = None
        for reply in replies:
            tag: dict[int, int] = reply.tag
            if reply.error is not None:
                # Entries may have been delivered without reaching us: re-read pending.
                for p in tag:
                    if p in owned and self._mode.get(p) == "live":
                        self._to_history(p)
                if self._nogroup(reply.error, tag):
                    continue
                error = reply.error
                if isinstance(error, redis.exceptions.AskError):  # MOVED too
                    error = BrokerUnavailable(
                        f"partitions {sorted(tag)} moved to another Redis node (slot "
                        f"{error.slot_id} is at {error.node_addr} now: a failover or a slot "
                        "move); re-reading the cluster's slot map")
                failure = failure or error
                continue
            for key, entries in reply.result or []:
                p = self.keys.partition_of(key)
                if not entries or p not in owned:
                    continue
                if self._mode.get(p) != "live" or self._gen.get(p, 0) != tag.get(p):
                    if self._mode.get(p) == "live":
                        self._to_history(p)
                    continue
                self._process(owned[p], entries, stop)
        if failure is not None:
            if isinstance(failure, BROKER_ERRORS):
                raise failure
            raise RuntimeError(f"reading group {self.group}: {failure!r}") from failure

    def _nogroup(self, error: BaseException, tag: Mapping[int, int]) -> bool:
        """Recreate the group when a read found it missing; True when that was the error."""
        if not (isinstance(error, redis.exceptions.ResponseError) and group_lost(error)):
            return False
        recreate_group(self.client, self.keys, self.stage_in, self.group, tag)
        return True

    # -- pieces ---------------------------------------------------------------------------
    def _recover(self, op: OwnedPartition) -> None:
        """Take over everything the group still has pending on this partition."""
        stream = self.keys.stream(self.stage_in, op.partition)
        claimed = claim_pending(self.client, stream, self.group, self.me)
        poison = over_delivered(self.client, stream, self.group, self.me,
                                self.service.max_deliveries)
        if poison:
            last = next((self._last_error[i] for i in poison if i in self._last_error), None)
            n = self.scripts.dead_letter_pending(
                op.partition, self.group, op.owner, stage_in=self.stage_in, kind=self.kind,
                stage=self.group, ids=poison, plugin=self.plugin,
                reason=f"delivered more than {self.service.max_deliveries} times without being "
                f"committed (it keeps crashing or stalling workers); dead-lettered as poison"
                + (f"; last error here: {last}" if last else ""),
            )
            self.record.add("dead_letters", n)
            event(log, logging.ERROR, "consumer_poison_dead_lettered",
                  f"dead-lettered {n} poison entries", group=self.group, partition=op.partition)
        self._sync_handler(op.partition)
        if claimed:
            event(log, logging.INFO, "consumer_pending_claimed",
                  f"took over {claimed} pending entries", group=self.group,
                  partition=op.partition)

    def _sync_handler(self, partition: int) -> None:
        """Hand the handler the committed checkpoints, to return to that state."""
        parts = range(self.service.partitions) if self.single_writer else [partition]
        pipe = self.client.pipeline(transaction=False)
        for q in parts:
            pipe.hgetall(self.keys.checkpoint(q, self.group))
        self.handler.on_acquire(partition, pipe.execute())

    def _process(self, op: OwnedPartition, entries: list[Entry], stop: threading.Event) -> None:
        p = op.partition
        guard = LeaseGuard(self.keeper, p, stop)
        self.record.set_state(State.ACTIVE)
        first = entries[0][0]
        try:
            result = self.handler.handle(p, entries, guard)
        except BROKER_ERRORS:
            raise
        except Exception as exc:
            self._failed(op, entries, exc, stop)
            return
        self._failures.pop(first, None)
        self._last_error.pop(first, None)
        self._commit(op, entries, result)

    def _failed(self, op: OwnedPartition, entries: list[Entry], exc: Exception,
                stop: threading.Event) -> None:
        """The handler raised: leave the entries pending, or dead-letter them once they
        failed ``max_deliveries`` times. A handler bug must not kill the worker or lose them."""
        p = op.partition
        if isinstance(exc, BatchAbandoned):
            event(log, logging.INFO, "consumer_batch_abandoned",
                  f"left {len(entries)} entries pending: {exc}", group=self.group, partition=p)
            self._to_history(p)
            return
        first = entries[0][0]
        n = self._failures.get(first, 0) + 1
        self._failures[first] = n
        self._last_error[first] = repr(exc)
        self.record.add("errors")
        event(log, logging.ERROR, "consumer_batch_error",
              f"processing entries {first.decode()}.. failed ({n}/"
              f"{self.service.max_deliveries}): {exc!r}", group=self.group, partition=p)
        if n >= self.service.max_deliveries:
            self._failures.pop(first, None)
            self._last_error.pop(first, None)
            done = self.scripts.dead_letter_pending(
                p, self.group, op.owner, stage_in=self.stage_in, kind=self.kind,
                stage=self.group, ids=[e[0] for e in entries], plugin=self.plugin,
                reason=f"processing failed {n} times: {exc!r}",
            )
            self.record.add("dead_letters", done)
        else:
            self._to_history(p)
            self._resync = True  # the handler may have half-done work to roll back
            stop.wait(min(0.1 * 2**n, 5.0))

    def _commit(self, op: OwnedPartition, entries: list[Entry], result: HandleResult) -> None:
        """Commit one batch (fenced: outputs, dead letters, checkpoint, acks) and count it."""
        p = op.partition
        try:
            outlen = self.scripts.commit(
                p, self.group, op.owner, stage_in=self.stage_in,
                ids=[e[0] for e in entries], outputs=result.outputs, stage_out=self.stage_out,
                dead_letters=result.dead_letters, checkpoint=result.checkpoint,
                dlq_maxlen=self.service.dlq_max_entries,
            )
        except BROKER_ERRORS:
            # Not confirmed (NotReplicated), or its answer was lost: it may have run.
            if self.scripts.wait.replicas:
                self._unconfirmed = p
            raise
        except Fenced as exc:
            event(log, logging.WARNING, "consumer_commit_fenced", str(exc), group=self.group,
                  partition=p)
            self._mode.pop(p, None)
            self._gen[p] = self._gen.get(p, 0) + 1
            # A handler with effects outside Redis (the file output) must return to the
            # committed state before its next write: what it did for this batch is not.
            self._sync_handler(p)
            return
        committed = getattr(self.handler, "on_committed", None)
        if committed is not None:
            committed(p)  # e.g. the file output forgets journal entries now covered in Redis
        rec = self.record
        rec.add("batches")
        rec.add("lines_in", result.lines_in)
        rec.add("lines_out", result.lines_out)
        rec.add("bytes_in", result.bytes_in)
        if result.dead_letters:
            rec.add("dead_letters", len(result.dead_letters))
        self._backlog.committed(p, outlen)

    def _maybe_trim(self, owned: Mapping[int, OwnedPartition]) -> None:
        now = time.monotonic()
        if now < self._next_trim:
            return
        self._next_trim = now + self.trim_interval_s
        for p in owned:
            self.scripts.trim(self.keys.stream(self.stage_in, p))


