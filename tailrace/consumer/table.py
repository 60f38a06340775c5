"""What a consumer knows about the partitions it owns, and the one place that changes it.

Every exactly-once hazard of the consumer is a partition changing hands or modes: a read
served after its lease was handed back, a reply applied after the partition went back to
its pending entries, a commit made with a token that is no longer the lease's. So the
state of one owned partition is one :class:`Partition`, and every transition is a method
of :class:`PartitionTable`:

    acquired ─▶ RECOVERING ──────────▶ HISTORY ──────────▶ LIVE
                (claim once, sync)    ▲  (none pending)     │
                     ▲                └─────────────────────┤ to_history: a failed or
                     │                                      │ stale read, a failed batch
                     └──────────────────────────────────────┘ resync_all: broker error,
                                                              Redis full, group lost
    an extra, from any mode: RELEASING ─▶ released (once no read in flight covers it)
    lost / fenced / expired: gone, from any mode

The table never talks to Redis: the lease keeper (another thread) reports what it got,
renewed and lost; the worker loop reports what its reads and commits found. Both sides go
through one lock. A transition on a partition the caller saw earlier takes that
:class:`Partition` object and does nothing when the table now holds another one (the
lease was lost and taken again, with a new token) or none: a late answer can never act on
a later acquisition of the partition.

Each read carries a :class:`Ticket` naming the token and *generation* of every partition
it covers; the generation is drawn from one counter for the whole table whenever a
partition enters or leaves live mode, so a reply for an old incarnation or an old mode
never matches.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import Enum

__all__ = ["Lease", "Mode", "Partition", "PartitionTable", "Ticket"]


class Mode(Enum):
    """Where an owned partition stands; each partition is in exactly one."""

    #: Just acquired, or the last commit's fate is unknown: take over the previous owner's
    #: pending entries (once per acquisition), then hand the handler the committed state.
    RECOVERING = "recovering"
    #: Re-reading this worker's own pending entries, one at a time, until none is left.
    HISTORY = "history"
    #: Reading new entries (``>``).
    LIVE = "live"
    #: An extra to hand back: no new read; released once no read in flight covers it.
    RELEASING = "releasing"


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease as the keeper holds it in Redis."""

    partition: int
    owner: str  # "worker:token", what the fenced scripts compare
    token: int


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a read covers: (partition, token, generation) for each partition it reads."""

    members: tuple[tuple[int, int, int], ...]

    @property
    def partitions(self) -> list[int]:
        return [p for p, _t, _g in self.members]


@dataclass(slots=True, eq=False)
class Partition:
    """Everything a worker knows about one partition it owns (one acquisition of it)."""

    number: int
    owner: str
    token: int
    deadline: float  # monotonic time the lease surely lasts until (from when it was sent)
    generation: int
    mode: Mode = Mode.RECOVERING
    claimed: bool = False  # the previous owner's pending entries are taken over
    extra: bool = False  # over the fair share: the keeper asks for it back
    paused_until: float | None = None  # output backlog over its limit: re-measure then
    #: first entry id of a batch the handler failed on -> times, and the last error: they
    #: belong to this acquisition (the entries' delivery counts in Redis carry across).
    failures: dict[bytes, int] = field(default_factory=dict)
    last_error: dict[bytes, str] = field(default_factory=dict)

    @property
    def lease(self) -> Lease:
        return Lease(self.number, self.owner, self.token)


class PartitionTable:
    """The partitions a worker owns; every change of one goes through here (thread-safe)."""

    def __init__(self, *, single_writer: bool = False) -> None:
        self.single_writer = single_writer
        self._lock = threading.Lock()
        self._parts: dict[int, Partition] = {}
        self._generations = itertools.count(1)
        self._resync = False
        self._output_deadline = 0.0  # single-writer outputs: the output-wide lease's

    # -- what is there ------------------------------------------------------------------
    def get(self, p: int) -> Partition | None:
        with self._lock:
            return self._parts.get(p)

    def numbers(self) -> list[int]:
        with self._lock:
            return sorted(self._parts)

    def partitions(self, *modes: Mode) -> list[Partition]:
        """The owned partitions (in any of ``modes`` when given), by number."""
        with self._lock:
            return [self._parts[p] for p in sorted(self._parts)
                    if not modes or self._parts[p].mode in modes]

    def leases(self) -> list[Lease]:
        with self._lock:
            return [part.lease for part in self._parts.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._parts)

    def all_live(self) -> bool:
        """Some partition is owned, every one is live, and no resync or release is due:
        the loop's next step only reads new entries."""
        with self._lock:
            return bool(self._parts) and not self._resync and all(
                part.mode is Mode.LIVE and not part.extra for part in self._parts.values())

    def valid(self, p: int, margin_s: float = 0.5) -> bool:
        """True while this worker's lease on ``p`` is surely still held.

        Outputs with side effects outside Redis check this before writing, so a paused
        ("zombie") worker never writes after its lease could have passed to another.
        """
        now = time.monotonic()
        with self._lock:
            part = self._parts.get(p)
            if part is None:
                return False
            if self.single_writer and self._output_deadline - margin_s < now:
                return False
            return part.deadline - margin_s > now

    # -- the lease keeper's reports -------------------------------------------------------
    def acquired(self, lease: Lease, deadline: float) -> Partition:
        """A lease was taken: the partition starts recovering (claim, then sync)."""
        with self._lock:
            part = Partition(lease.partition, lease.owner, lease.token, deadline,
                             next(self._generations))
            self._parts[lease.partition] = part
            return part

    def renewed(self, lease: Lease, deadline: float) -> None:
        with self._lock:
            part = self._parts.get(lease.partition)
            if part is not None and part.token == lease.token:
                part.deadline = deadline

    def lost(self, lease: Lease) -> bool:
        """Redis says another worker holds the lease now; True when it was still here."""
        with self._lock:
            part = self._parts.get(lease.partition)
            if part is None or part.token != lease.token:
                return False
            del self._parts[lease.partition]
            return True

    def expire(self, now: float) -> list[int]:
        """Forget the partitions whose lease lapsed (Redis unreachable meanwhile)."""
        with self._lock:
            gone = [p for p, part in self._parts.items() if part.deadline < now]
            for p in gone:
                del self._parts[p]
            return gone

    def lose_all(self) -> None:
        """The single-writer output's lease was lost: no partition may be worked on."""
        with self._lock:
            self._parts.clear()
            self._output_deadline = 0.0

    def output_held(self, deadline: float) -> None:
        with self._lock:
            self._output_deadline = deadline

    def set_extras(self, extras: Collection[int]) -> None:
        """The partitions over the fair share (released by the loop between batches)."""
        with self._lock:
            for p, part in self._parts.items():
                part.extra = p in extras

    # -- the worker loop's transitions ------------------------------------------------------
    def _current(self, part: Partition) -> bool:
        return self._parts.get(part.number) is part

    def to_history(self, part: Partition) -> None:
        """Back to its pending entries (a read's reply was lost, stale or failed)."""
        with self._lock:
            if self._current(part) and part.mode is Mode.LIVE:
                part.mode = Mode.HISTORY
                part.generation = next(self._generations)

    def claimed(self, part: Partition) -> None:
        """The previous owner's pending entries are this worker's now."""
        with self._lock:
            if self._current(part):
                part.claimed = True

    def recovered(self, part: Partition) -> None:
        """The handler is back at the committed state: re-read the pending entries.

        Only once the previous owner's pending entries were claimed: a claim a broker error
        cut short is redone first, or they would stay pending on the old owner for good.
        """
        with self._lock:
            if self._current(part) and part.mode is Mode.RECOVERING and part.claimed:
                part.mode = Mode.HISTORY

    def drained(self, part: Partition) -> None:
        """No pending entry is left: read new ones."""
        with self._lock:
            if self._current(part) and part.mode is Mode.HISTORY:
                part.mode = Mode.LIVE
                part.generation = next(self._generations)

    def resync_all(self) -> None:
        """The fate of the last commit is unknown (a broker error, Redis full, the group
        lost): every partition recovers again; replies of reads issued before are stale."""
        with self._lock:
            self._resync = False
            for part in self._parts.values():
                if part.mode is not Mode.RELEASING:
                    part.mode = Mode.RECOVERING
                    part.generation = next(self._generations)

    def request_resync(self) -> None:
        """A handler failed mid-batch: resync every partition at the next reconcile."""
        with self._lock:
            self._resync = True

    def reconcile(self) -> None:
        """Apply a requested resync; mark extras RELEASING (:meth:`release` takes them out)."""
        if self._resync:
            self.resync_all()
        with self._lock:
            for part in self._parts.values():
                if part.extra and part.mode is not Mode.RELEASING:
                    part.mode = Mode.RELEASING
                    part.generation = next(self._generations)

    def release(self, busy: Collection[int]) -> list[Partition]:
        """Take out the RELEASING partitions no read in flight covers (``busy``: the
        partitions reads in flight cover); the caller hands their leases back."""
        with self._lock:
            gone = [part for part in self._parts.values()
                    if part.mode is Mode.RELEASING and part.number not in busy]
            for part in gone:
                del self._parts[part.number]
            return gone

    def fenced(self, part: Partition) -> bool:
        """A script found the lease taken over: forget the partition; True if it was here."""
        with self._lock:
            if not self._current(part):
                return False
            del self._parts[part.number]
            return True

    def clear(self) -> list[Partition]:
        with self._lock:
            parts, self._parts = list(self._parts.values()), {}
            return parts

    # -- backpressure -----------------------------------------------------------------------
    def pause(self, part: Partition, until: float) -> None:
        with self._lock:
            if self._current(part):
                part.paused_until = until

    def resume(self, part: Partition) -> None:
        with self._lock:
            if self._current(part):
                part.paused_until = None

    def due(self, now: float) -> list[Partition]:
        """Paused partitions whose backlog is due for another look."""
        with self._lock:
            return [part for part in self._parts.values()
                    if part.paused_until is not None and part.paused_until <= now]

    # -- failures ---------------------------------------------------------------------------
    def failed(self, part: Partition, first: bytes, error: str) -> int:
        """Count one more failure of the batch starting at ``first``; returns the count."""
        with self._lock:
            n = part.failures.get(first, 0) + 1
            part.failures[first] = n
            part.last_error[first] = error
            return n

    def succeeded(self, part: Partition, first: bytes) -> None:
        """The batch starting at ``first`` was handled (or dead-lettered): forget its failures."""
        with self._lock:
            part.failures.pop(first, None)
            part.last_error.pop(first, None)

    # -- reads ------------------------------------------------------------------------------
    def readable(self, usable: Iterable[int]) -> list[Partition]:
        """The live, unpaused partitions among ``usable`` (what a read of ``>`` may cover)."""
        allowed = set(usable)
        with self._lock:
            return [part for p, part in sorted(self._parts.items())
                    if p in allowed and part.mode is Mode.LIVE and part.paused_until is None]

    def ticket(self, parts: Iterable[Partition]) -> Ticket:
        with self._lock:
            return Ticket(tuple((part.number, part.token, part.generation) for part in parts))

    def accept(self, ticket: Ticket, p: int) -> Partition | None:
        """The partition a reply's entries for ``p`` may be processed on, or None.

        A reply is applied only to the acquisition, mode and generation it was read for. A
        live partition that gets a stale reply goes back to history: the reply's entries
        were delivered to this worker and are pending on it now.
        """
        member = next((m for m in ticket.members if m[0] == p), None)
        with self._lock:
            part = self._parts.get(p)
            if part is None or member is None or part.mode is not Mode.LIVE:
                return None  # gone, or re-reading its pending entries anyway
            if (part.token, part.generation) == member[1:]:
                return part
            part.mode = Mode.HISTORY
            part.generation = next(self._generations)
            return None

    def read_failed(self, ticket: Ticket) -> None:
        """A read raised: entries may have been delivered without reaching this worker."""
        for p in ticket.partitions:
            part = self.get(p)
            if part is not None:
                self.to_history(part)
