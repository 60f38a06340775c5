"""Backpressure between stages: a consumer stops reading a partition while the stream it
writes to holds more unacknowledged entries than the limit, and looks again shortly after.
"""

from __future__ import annotations

import time

import redis

from ..keys import Keys
from .table import Partition, PartitionTable

__all__ = ["OutputBacklog"]

RECHECK_S = 0.2


class OutputBacklog:
    """Pauses partitions whose output stream is over ``limit`` entries (in the table).

    A commit returns the output stream's length, so pausing costs nothing; only paused
    partitions are re-measured (one pipelined XLEN per due partition, every ``recheck_s``).
    """

    def __init__(self, client: redis.Redis, keys: Keys, table: PartitionTable, stage_out: str,
                 limit: int, recheck_s: float = RECHECK_S) -> None:
        self.client = client
        self.keys = keys
        self.table = table
        self.stage_out = stage_out
        self.limit = limit
        self.recheck_s = recheck_s

    def committed(self, part: Partition, out_length: int) -> None:
        """Note the output stream's length after a commit; pause the partition if over."""
        if self.limit and out_length >= self.limit:
            self.table.pause(part, time.monotonic() + self.recheck_s)

    def recheck(self) -> None:
        """Re-measure the paused partitions due for a look; resume those under the limit."""
        now = time.monotonic()
        due = self.table.due(now)
        if not due:
            return
        pipe = self.client.pipeline(transaction=False)
        for part in due:
            pipe.xlen(self.keys.stream(self.stage_out, part.number))
        for part, n in zip(due, pipe.execute(), strict=True):
            if int(n) < self.limit:
                self.table.resume(part)
            else:
                self.table.pause(part, now + self.recheck_s)
