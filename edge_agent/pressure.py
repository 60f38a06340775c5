"""Backpressure on the agent: which partitions may not take batches now, and why.

Two things stop reading (the files are the buffer): a partition whose PRODUCE was refused
(its backlog over ``max_entries_per_partition``, or a Redis error such as OOM) waits
``THROTTLE_RECHECK_S`` before its held batch is tried again; and Redis memory over its
limit (``service.backlog.max_redis_memory``, default 90% of ``maxmemory`` of any master)
pauses every partition until a look at Redis finds room again.
"""

from __future__ import annotations

import logging

import redis

from tailrace.logs import event
from tailrace.serviceconfig import BacklogConfig
from tailrace.topology import memory_by_node

__all__ = ["MEMORY_CHECK_INTERVAL_S", "THROTTLE_RECHECK_S", "Backpressure"]

log = logging.getLogger(__name__)

MEMORY_CHECK_INTERVAL_S = 1.0
THROTTLE_RECHECK_S = 0.25


class Backpressure:
    """The throttled partitions and the memory pause (no reading, no producing)."""

    def __init__(self, backlog: BacklogConfig, partitions: int) -> None:
        self.backlog = backlog
        self.partitions = partitions
        self.throttled: dict[int, float] = {}  # partition -> when to try again
        self.memory_full = False
        self._next_memory_check = 0.0

    def throttle(self, partition: int, now: float) -> None:
        """Redis refused a batch of ``partition``: hold it, try again soon."""
        self.throttled[partition] = now + THROTTLE_RECHECK_S

    def memory_refused(self, now: float) -> bool:
        """PRODUCE saw memory full before the periodic look did: pause every read now
        (:meth:`check_memory` resumes them once Redis has room). Returns whether this
        started the pause."""
        if self.memory_full:
            return False
        self.memory_full = True
        self._next_memory_check = now + MEMORY_CHECK_INTERVAL_S
        return True

    def throttled_now(self, now: float) -> set[int]:
        """The partitions that may not take batches on this pass."""
        if self.memory_full:
            return set(range(self.partitions))
        for p in [p for p, t in self.throttled.items() if t <= now]:
            del self.throttled[p]  # retry its held batch on this pass
        return set(self.throttled)

    def reason(self, throttled: set[int]) -> str:
        if self.memory_full:
            return "Redis memory over its limit (service.backlog.max_redis_memory)"
        return (f"backlog over {self.backlog.max_entries_per_partition} batches on "
                f"partitions {sorted(throttled)}")

    def check_memory(self, client: redis.Redis, now: float) -> None:
        """Every ``MEMORY_CHECK_INTERVAL_S``: pause or resume on Redis's memory."""
        if now < self._next_memory_check:
            return
        self._next_memory_check = now + MEMORY_CHECK_INTERVAL_S
        configured = self.backlog.max_redis_memory
        nodes = [(n, configured or int(n.maxmemory * 0.9)) for n in memory_by_node(client)]
        over = [(n, lim) for n, lim in nodes if lim and n.used >= lim]  # any master full pauses
        full = bool(over)
        if full != self.memory_full and nodes:
            node, limit = (over or nodes)[0]
            event(log, logging.WARNING if full else logging.INFO, "agent_memory_throttle",
                  f"Redis {node.node} uses {node.used} bytes (limit {limit}): "
                  + ("pausing reads" if full else "resuming reads"))
        self.memory_full = full
