"""Every XREADGROUP a consumer makes, in one place: its own pending entries one at a time
("history"), and new entries (``>``) on every live partition.

On one server a single blocking XREADGROUP covers every live partition, on the loop's
thread; once a read brought entries, the next one is sent before they are handled
(:meth:`Reads.prefetch`, :class:`~tailrace.consumer.prefetch.InlineRead`), so Redis serves
it meanwhile. On a Redis Cluster each partition has its own blocking read
(:class:`~tailrace.consumer.lanes.LaneReads`: the cluster refuses commands across slots),
and the loop wakes up when any of them answers. Each read carries a
:class:`~tailrace.consumer.table.Ticket` from the table, which decides whether its reply
may still be applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import redis

from ..handler import Entry
from ..keys import Keys
from ..topology import DEFAULT_NODE, is_cluster
from .lanes import LaneReads, LaneReply
from .prefetch import InlineRead
from .table import Partition, PartitionTable

__all__ = ["Reads"]


class Reads:
    """The consumer's reads of its input streams (only the loop's thread calls these)."""

    def __init__(self, client: redis.Redis, keys: Keys, table: PartitionTable, *, group: str,
                 consumer: str, stage_in: str, count: int, block_ms: int) -> None:
        self.client = client
        self.keys = keys
        self.table = table
        self.group = group
        self.consumer = consumer
        self.stage_in = stage_in
        self.count = count
        self.block_ms = block_ms
        self.cluster = is_cluster(client)
        self.lanes: LaneReads | InlineRead = (
            LaneReads if self.cluster else InlineRead)(client, group, consumer, count=count,
                                                       block_ms=block_ms)

    def _stream(self, p: int) -> str:
        return self.keys.stream(self.stage_in, p)

    def pending(self, part: Partition) -> list[Entry]:
        """The oldest entry this worker has pending on the partition (none: all caught up).

        One entry at a time: an entry that crashes the worker (poison) then piles up
        deliveries alone, and the entries read together with it get committed instead of
        being dead-lettered with it.
        """
        resp: Any = self.client.xreadgroup(self.group, self.consumer,
                                           {self._stream(part.number): "0"}, count=1)
        return cast(list[Entry], resp[0][1]) if resp else []

    def lanes_of(self, parts: list[Partition]) -> dict[str, list[Partition]]:
        """Lane -> the partitions its read covers (one lane off-cluster)."""
        if not self.cluster:
            return {DEFAULT_NODE: parts} if parts else {}
        return {self._stream(part.number): [part] for part in parts}

    def settle(self, lanes: Mapping[str, list[Partition]]) -> None:
        """Cancel every read in flight that does not cover exactly its lane's partitions.

        Returns once each cancelled read's reply is in: nothing is served on it afterwards.
        """
        for lane, streams in self.lanes.in_flight().items():
            wanted = {self._stream(part.number) for part in lanes.get(lane, ())}
            if streams != wanted:
                self.lanes.cancel(lane)

    def busy(self) -> set[int]:
        """The partitions a read in flight covers (a release of them must wait)."""
        return {self.keys.partition_of(stream)
                for streams in self.lanes.in_flight().values() for stream in streams}

    def idle(self) -> bool:
        """No read in flight and no reply waiting."""
        return not self.lanes.in_flight() and not self.lanes.has_ready()

    def new(self, lanes: Mapping[str, list[Partition]]) -> list[LaneReply]:
        """Start a read on every idle lane; return what arrived (waiting up to a block)."""
        in_flight = self.lanes.in_flight()
        if len(lanes) == 1 and not in_flight and not self.lanes.has_ready():
            # The common single-server case: one blocking call on this thread.
            ((lane, parts),) = lanes.items()
            ticket = self.table.ticket(parts)
            resp = cast(Any, self.client.xreadgroup(
                self.group, self.consumer, {self._stream(part.number): ">" for part in parts},
                count=self.count, block=self.block_ms,
            ))
            return [LaneReply(lane, ticket, result=resp or [])]
        for lane, parts in lanes.items():
            if lane not in in_flight:
                self.lanes.issue(lane, [self._stream(part.number) for part in parts],
                                 self.table.ticket(parts))
        return self.lanes.collect(self.block_ms / 1000 + 1.0)

    def prefetch(self, lanes: Mapping[str, list[Partition]]) -> None:
        """Send the next read of ``lanes`` now, to be collected by the next :meth:`new`
        (one server only: a cluster's lanes read on threads, see prefetch.py)."""
        if self.cluster or self.lanes.in_flight() or self.lanes.has_ready():
            return
        for lane, parts in lanes.items():
            self.lanes.issue(lane, [self._stream(part.number) for part in parts],
                             self.table.ticket(parts))

    def cut(self) -> list[LaneReply]:
        """Cancel every read in flight; what they and the reads already in brought."""
        self.settle({})
        return self.lanes.collect(0)

    def reset(self) -> None:
        """Drop every lane (after a broker error): they reconnect to the nodes serving then."""
        self.lanes.reset()

    def close(self) -> None:
        self.lanes.close()
