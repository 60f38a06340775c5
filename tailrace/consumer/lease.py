"""Partition ownership inside a consumer group: membership, leases, fair-share rebalancing.

A worker refreshes its heartbeat in ``tr:members:GROUP``; live members are those seen
within the lease TTL. Each worker aims at ``ceil(P / live)`` partitions: below it, it
acquires free leases (SET NX PX in a script, with a fencing token that only grows); above
it, it marks extras, which the worker loop hands back once the batch in hand is committed.
Leases are renewed at a third of their TTL by this keeper thread, so a long batch never
lets one expire.

The keeper only talks to Redis and reports what it got, renewed and lost to the
:class:`~tailrace.consumer.table.PartitionTable`; it keeps no partition state of its own.

Single-writer outputs (a file) add one output-wide lease: only its holder takes any
partition, so two processes never write the same file.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib

import redis

from ..broker import BROKER_ERRORS
from ..keys import Keys
from ..lifecycle import State, ThreadRecord
from ..logs import event
from ..scriptcalls import Scripts
from .table import Lease, PartitionTable

__all__ = ["LeaseKeeper"]

log = logging.getLogger(__name__)


class LeaseKeeper(threading.Thread):
    """Keeps this worker's share of a group's partitions (a background thread).

    It reports every lease it takes, renews or finds lost to ``table``; the worker loop
    hands the :meth:`release` calls the leases of the partitions the table let go. Lost
    leases simply vanish from the table; a commit on them is fenced.
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
        status: ThreadRecord,
        table: PartitionTable,
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
        self.status = status
        self.table = table
        self.single_writer = single_writer
        self.max_partitions = max_partitions
        self.stop_event = threading.Event()
        self.wake = threading.Event()
        #: Set whenever this keeper takes partitions: a worker that owns none waits on it
        #: instead of a whole heartbeat (at start-up the first tick lands within ms).
        self.gained = threading.Event()
        self._output_owner: str | None = None
        # Start the acquisition scan at a worker-specific partition to spread contention.
        self._offset = zlib.crc32(worker_id.encode()) % max(partitions, 1)

    # -- worker-loop side ---------------------------------------------------------------
    def release(self, leases: list[Lease]) -> None:
        """Hand leases back (the table no longer holds their partitions); one round trip
        per node. A failure is left alone: the leases expire by themselves."""
        if not leases:
            return
        batch = self.scripts.batch()
        for lease in leases:
            self.scripts.release(lease.partition, self.group, lease.owner, client=batch)
        try:
            batch.execute()
        except BROKER_ERRORS:
            pass  # the leases expire by themselves
        event(log, logging.INFO, "lease_released",
              f"released partitions {sorted(lease.partition for lease in leases)}",
              group=self.group, worker=self.worker_id)

    # -- keeper thread ------------------------------------------------------------------
    def run(self) -> None:
        self.status.set_state(State.ACTIVE)
        while not self.stop_event.is_set():
            try:
                self.tick()
                if self.status.state == State.BROKER_DOWN:
                    self.status.set_state(State.ACTIVE)
            except BROKER_ERRORS as exc:
                self.status.set_state(State.BROKER_DOWN, str(exc))
                # Leases may lapse while Redis is away; forget those past their deadline.
                self.table.expire(time.monotonic())
            self.wake.wait(self.heartbeat_s)
            self.wake.clear()
        self.status.set_state(State.STOPPED)

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def leave(self) -> None:
        """Release every lease and leave the group (clean shutdown)."""
        self.stop()
        self.release([part.lease for part in self.table.clear()])
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
        leases = self.table.leases()
        if not leases:
            return
        sent = time.monotonic()
        batch = self.scripts.batch()  # one round trip per node
        for lease in leases:
            self.scripts.renew(lease.partition, self.group, lease.owner, self.ttl_ms,
                               client=batch)
        # A node that is down fails its renewals only; the others' still count.
        results = batch.execute(partial=True)
        failed = next((r for r in results if isinstance(r, BaseException)), None)
        lost = []
        for lease, ok in zip(leases, results, strict=True):
            if isinstance(ok, BaseException):
                continue  # unknown: the deadline stays, the lease may still be ours
            if int(ok) == 1:
                self.table.renewed(lease, sent + self.ttl_ms / 1000)
            elif self.table.lost(lease):
                lost.append(lease.partition)
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
                self.table.output_held(sent + self.ttl_ms / 1000)
                return True
            event(log, logging.WARNING, "lease_output_lost",
                  "lost the single-writer lease of this output", group=self.group)
            self._output_owner = None
            self.table.lose_all()
        owner = f"{self.worker_id}:1"
        if self.scripts.acquire_key(key, owner, self.ttl_ms):
            self._output_owner = owner
            self.table.output_held(sent + self.ttl_ms / 1000)
            return True
        return False

    def _share(self, holds_output: bool, members: int) -> int:
        if self.single_writer:
            share = self.partitions if holds_output else 0
        else:
            share = math.ceil(self.partitions / members)
        if self.max_partitions is not None:
            share = min(share, self.max_partitions)
        return share

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
        share = self._share(holds_output, members)
        owned = self.table.numbers()
        # Give back the highest-numbered extras; the loop releases them between batches.
        self.table.set_extras(set(owned[share:]) if len(owned) > share else set())
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
                self.table.acquired(Lease(p, f"{self.worker_id}:{token}", token),
                                    sent + self.ttl_ms / 1000)
                got.append(p)
        if got:
            self.gained.set()
            event(log, logging.INFO, "lease_acquired", f"acquired partitions {got}",
                  group=self.group, worker=self.worker_id, members=members, share=share)
