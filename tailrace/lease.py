"""Partition ownership inside a consumer group: membership, leases, fair-share rebalancing.

A worker refreshes its heartbeat in ``tr:members:GROUP``; live members are those seen
within the lease TTL. Each worker aims at ``ceil(P / live)`` partitions: below it, it
acquires free leases (SET NX PX in a script, with a fencing token that only grows); above
it, it hands extras back once the batch in hand is committed. Leases are renewed at a third
of their TTL by this keeper thread, so a long batch never lets one expire.

Single-writer outputs (a file) add one output-wide lease: only its holder takes any
partition, so two processes never write the same file.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from dataclasses import dataclass

import redis

from .broker import BROKER_ERRORS
from .keys import Keys
from .lifecycle import State, ThreadRecord
from .logs import event
from .scriptcalls import Scripts

__all__ = ["LeaseKeeper", "OwnedPartition"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OwnedPartition:
    partition: int
    owner: str  # "worker:token", what the fenced scripts compare
    token: int


class LeaseKeeper(threading.Thread):
    """Keeps this worker's share of a group's partitions (a background thread).

    The worker loop reads :meth:`owned`, picks up :meth:`take_acquired` (to recover the
    previous owner's pending entries first) and, between batches, :meth:`release` s the
    :meth:`extras` it may give up. Lost leases simply vanish from :meth:`owned`; a commit on
    them is fenced.
    """

    def __init__(
        self,
        client: redis.Redis,
        scripts: Scripts,
        keys: Keys,
        group: str,
        worker_id: str,
        partitions: int,
        ttl_ms: int,
        heartbeat_ms: int,
        record: ThreadRecord,
        *,
        single_writer: bool = False,
        max_partitions: int | None = None,
    ) -> None:
        super().__init__(name=f"lease-{group}", daemon=True)
        self.client = client
        self.scripts = scripts
        self.keys = keys
        self.group = group
        self.worker_id = worker_id
        self.partitions = partitions
        self.ttl_ms = ttl_ms
        self.heartbeat_s = min(heartbeat_ms, ttl_ms // 3) / 1000
        self.record = record
        self.single_writer = single_writer
        self.max_partitions = max_partitions
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        #: Set whenever this keeper takes partitions: a worker that owns none waits on it
        #: instead of a whole heartbeat (at start-up the first tick lands within ms).
        self.gained = threading.Event()
        self._lock = threading.Lock()
        self._owned: dict[int, OwnedPartition] = {}
        self._deadline: dict[int, float] = {}
        self._acquired: list[int] = []
        self._extras: set[int] = set()
        self._output_owner: str | None = None
        self._output_deadline = 0.0
        # Start the acquisition scan at a worker-specific partition to spread contention.
        self._offset = zlib.crc32(worker_id.encode()) % max(partitions, 1)

    # -- worker-loop side ---------------------------------------------------------------
    def owned(self) -> dict[int, OwnedPartition]:
        with self._lock:
            return dict(self._owned)

    def take_acquired(self) -> list[int]:
        with self._lock:
            out, self._acquired = self._acquired, []
            return out

    def extras(self) -> set[int]:
        with self._lock:
            return set(self._extras)

    def valid(self, partition: int, margin_s: float = 0.5) -> bool:
        """True while this worker's lease on ``partition`` is surely still held.

        Outputs with side effects outside Redis check this before writing, so a paused
        ("zombie") worker never writes after its lease could have passed to another.
        """
        with self._lock:
            deadline = self._deadline.get(partition)
            if deadline is None:
                return False
            if self.single_writer and self._output_deadline - margin_s < time.monotonic():
                return False
            return deadline - margin_s > time.monotonic()

    def release(self, partitions: list[int]) -> None:
        """Hand partitions back (after their in-flight batch is committed or dropped)."""
        with self._lock:
            owned = [self._owned.pop(p) for p in partitions if p in self._owned]
            for p in partitions:
                self._deadline.pop(p, None)
                self._extras.discard(p)
        if not owned:
            return
        batch = self.scripts.batch()
        for op in owned:
            self.scripts.release(op.partition, self.group, op.owner, client=batch)
        try:
            batch.execute()
        except BROKER_ERRORS:
            pass  # the leases expire by themselves
        event(log, logging.INFO, "lease_released", f"released partitions {sorted(partitions)}",
              group=self.group, worker=self.worker_id)

    # -- keeper thread ------------------------------------------------------------------
    def run(self) -> None:
        self.record.set_state(State.ACTIVE)
        while not self.stop_event.is_set():
            try:
                self.tick()
                if self.record.state == State.BROKER_DOWN:
                    self.record.set_state(State.ACTIVE)
            except BROKER_ERRORS as exc:
                self.record.set_state(State.BROKER_DOWN, str(exc))
                # Leases may lapse while Redis is away; forget those past their deadline.
                now = time.monotonic()
                with self._lock:
                    for p in [p for p, d in self._deadline.items() if d < now]:
                        self._owned.pop(p, None)
                        self._deadline.pop(p, None)
            self.wake.wait(self.heartbeat_s)
            self.wake.clear()
        self.record.set_state(State.STOPPED)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def leave(self) -> None:
        """Release every lease and leave the group (clean shutdown)."""
        self.stop()
        self.release(list(self.owned()))
        try:
            self.client.zrem(self.keys.members(self.group), self.worker_id)
            if self._output_owner is not None:
                self.scripts.release_key(self.keys.output_lease(self.group), self._output_owner)
        except BROKER_ERRORS:
            pass

    def live_members(self) -> int:
        return max(1, self.scripts.members(self.keys.members(self.group), self.worker_id,
                                           self.ttl_ms))

    def _renew(self) -> None:
        owned = self.owned()
        if not owned:
            return
        sent = time.monotonic()
        batch = self.scripts.batch()  # one round trip per node
        for op in owned.values():
            self.scripts.renew(op.partition, self.group, op.owner, self.ttl_ms, client=batch)
        # A node that is down fails its renewals only; the others' still count.
        results = batch.execute(partial=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        lost = []
        with self._lock:
            for op, ok in zip(owned.values(), results, strict=True):
                if isinstance(ok, BaseException):
                    continue  # unknown: the deadline stays, the lease may still be ours
                if int(ok) == 1:
                    self._deadline[op.partition] = sent + self.ttl_ms / 1000
                elif self._owned.get(op.partition) == op:
                    del self._owned[op.partition]
                    self._deadline.pop(op.partition, None)
                    lost.append(op.partition)
        if lost:
            event(log, logging.WARNING, "lease_lost",
                  f"lost partitions {lost}: another worker took them over (was this worker "
                  "paused longer than lease_ttl_ms?)", group=self.group, worker=self.worker_id)
        if failed is not None:
            raise failed

    def _hold_output_lease(self) -> bool:
        """Single-writer outputs: hold the output-wide lease; False when another worker does."""
        key = self.keys.output_lease(self.group)
        sent = time.monotonic()
        if self._output_owner is not None:
            ok = self.scripts.renew_key(key, self._output_owner, self.ttl_ms)
            if int(ok) == 1:
                self._output_deadline = sent + self.ttl_ms / 1000
                return True
            event(log, logging.WARNING, "lease_output_lost",
                  "lost the single-writer lease of this output", group=self.group)
            self._output_owner = None
            with self._lock:
                self._owned.clear()
                self._deadline.clear()
        owner = f"{self.worker_id}:1"
        if self.scripts.acquire_key(key, owner, self.ttl_ms):
            self._output_owner = owner
            self._output_deadline = sent + self.ttl_ms / 1000
            return True
        return False

    def tick(self) -> None:
        # Renewals first, each lease on its own node: on a Redis Cluster a node that is
        # failing over (it may hold the membership key) must not let the partition leases
        # held on healthy nodes, or the output-wide lease, lapse.
        failed: BaseException | None = None
        try:
            self._renew()
        except BROKER_ERRORS as exc:
            failed = exc
        holds_output = self._hold_output_lease() if self.single_writer else False
        if failed is not None:
            raise failed
        members = self.live_members()
        if self.single_writer:
            share = self.partitions if holds_output else 0
        else:
            share = math.ceil(self.partitions / members)
        if self.max_partitions is not None:
            share = min(share, self.max_partitions)
        owned = self.owned()
        with self._lock:
            if len(owned) > share:
                # Give back the highest-numbered extras; the loop releases them between batches.
                self._extras = set(sorted(owned)[share:])
            else:
                self._extras = set()
        need = share - len(owned)
        if need <= 0:
            return
        order = [(self._offset + i) % self.partitions for i in range(self.partitions)]
        candidates = [p for p in order if p not in owned]
        pipe = self.client.pipeline(transaction=False)
        for p in candidates:
            pipe.exists(self.keys.lease(p, self.group))
        free = [p for p, ex in zip(candidates, pipe.execute(), strict=True) if not ex]
        got = []
        for p in free[:need]:
            sent = time.monotonic()
            token = self.scripts.acquire(p, self.group, self.worker_id, self.ttl_ms)
            if token:
                with self._lock:
                    self._owned[p] = OwnedPartition(p, f"{self.worker_id}:{token}", token)
                    self._deadline[p] = sent + self.ttl_ms / 1000
                    self._acquired.append(p)
                got.append(p)
        if got:
            self.gained.set()
            event(log, logging.INFO, "lease_acquired", f"acquired partitions {got}",
                  group=self.group, worker=self.worker_id, members=members, share=share)
