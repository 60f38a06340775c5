"""The consumer runtime shared by processors and sinks.

:class:`StreamConsumer` (``loop``) runs a consumer group worker; what it knows about the
partitions it owns is a :class:`PartitionTable` of :class:`Partition` s (``table``), which
makes every change of :class:`Mode`. Around them: the lease keeper (``lease``: Redis only,
reporting to the table), the reads (``reads``, over ``lanes``), recovery of a previous
owner's pending entries (``recovery``) and backpressure (``backlog``).
"""

from __future__ import annotations

from .loop import StreamConsumer
from .table import Mode, Partition, PartitionTable

__all__ = ["Mode", "Partition", "PartitionTable", "StreamConsumer"]
