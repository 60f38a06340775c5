"""What a stream consumer's role-specific part sees: the :class:`BatchHandler` interface.

A handler (the processor chain, a sink's output) is pure over the entries it is given and
never talks to Redis; :class:`tailrace.consumer.StreamConsumer` owns the broker and commits
what :meth:`BatchHandler.handle` returns in one fenced script.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from .scriptcalls import DeadLetter

__all__ = ["BatchAbandoned", "BatchHandler", "Entry", "HandleResult", "LeaseCheck", "LeaseGuard"]

Entry = tuple[bytes, Mapping[bytes, bytes] | None]


class BatchAbandoned(Exception):
    """The handler gives up on a batch without committing (stop requested, lease at risk).

    The entries stay pending; this worker or the next owner redoes them.
    """


@dataclass
class HandleResult:
    """What a handler produced from one partition's entries; committed in one script."""

    outputs: list[bytes] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    checkpoint: dict[str, str | int] | None = None
    lines_in: int = 0
    lines_out: int = 0
    bytes_in: int = 0


class LeaseCheck(Protocol):
    """Who knows whether a lease is surely still held (the consumer's partition table)."""

    def valid(self, partition: int) -> bool: ...


@dataclass
class LeaseGuard:
    """Lets a handler check, during long retries, that it should still go on."""

    leases: LeaseCheck
    partition: int
    stop: threading.Event

    def valid(self) -> bool:
        return not self.stop.is_set() and self.leases.valid(self.partition)

    def check(self) -> None:
        """Raise :class:`BatchAbandoned` when stopping or the lease may be gone."""
        if self.stop.is_set():
            raise BatchAbandoned("stop requested")
        self.check_lease()

    def check_lease(self) -> None:
        """Raise :class:`BatchAbandoned` when the lease may be gone (a stop does not: the
        batch in hand is finished and committed, that is the drain)."""
        if not self.leases.valid(self.partition):
            raise BatchAbandoned(f"lease on partition {self.partition} is about to lapse")


class BatchHandler(Protocol):
    """The role-specific part of a consumer."""

    #: True when everything the handler does for a batch is in what it returns (no effect
    #: outside Redis, no state kept between batches): its commit may then still be in
    #: flight (sent, its reply unread) while the next batch is read and handled (the
    #: processors). Outputs with side effects (files, Elasticsearch) keep False: they
    #: write before their commit.
    overlap_commits: bool

    def on_acquire(self, partition: int, checkpoints: list[Mapping[bytes, bytes]]) -> None:
        """Called when a partition is taken, before any of its entries, with checkpoints.

        For per-partition consumers ``checkpoints`` holds the partition's own hash; for a
        single-writer output it holds every partition's (the output's state is spread
        over them). Also called again after a broker error, when the last commit's fate
        is unknown: the handler must return to the committed state.
        """

    def on_committed(self, partition: int) -> None:
        """Called after each commit of this partition is in Redis (e.g. the file output
        forgets journal entries the commit now covers); a handler without such state
        returns at once."""

    def handle(self, partition: int, entries: list[Entry], guard: LeaseGuard) -> HandleResult:
        """Process one partition's entries (in order). May raise :class:`BatchAbandoned`."""

    def close(self) -> None: ...
