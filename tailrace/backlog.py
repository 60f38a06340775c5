"""Backpressure between stages: a consumer stops reading a partition while the stream it
writes to holds more unacknowledged entries than the limit, and looks again shortly after.
"""

from __future__ import annotations

import time
from collections.abc import Collection

import redis

from .keys import Keys

__all__ = ["OutputBacklog"]

RECHECK_S = 0.2


class OutputBacklog:
    """Which partitions are paused because their output stream is over ``limit`` entries.

    A commit returns the output stream's length, so pausing costs nothing; only paused
    partitions are re-measured (one pipelined XLEN per due partition, every ``recheck_s``).
    """

    def __init__(self, client: redis.Redis, keys: Keys, stage_out: str, limit: int,
                 recheck_s: float = RECHECK_S) -> None:
        self.client = client
        self.keys = keys
        self.stage_out = stage_out
        self.limit = limit
        self.recheck_s = recheck_s
        self._paused: dict[int, float] = {}  # partition -> time to re-check the backlog

    def committed(self, partition: int, out_length: int) -> None:
        """Note the output stream's length after a commit; pause the partition if over."""
        if self.limit and out_length >= self.limit:
            self._paused[partition] = time.monotonic() + self.recheck_s

    def unpaused(self, owned: Collection[int]) -> list[int]:
        """The owned partitions free to read now (re-measuring those due for a look)."""
        now = time.monotonic()
        due = [p for p, t in self._paused.items() if t <= now and p in owned]
        if due:
            pipe = self.client.pipeline(transaction=False)
            for p in due:
                pipe.xlen(self.keys.stream(self.stage_out, p))
            for p, n in zip(due, pipe.execute(), strict=True):
                if int(n) < self.limit:
                    del self._paused[p]
                else:
                    self._paused[p] = now + self.recheck_s
        for p in [p for p in self._paused if p not in owned]:
            del self._paused[p]
        return [p for p in owned if p not in self._paused]
