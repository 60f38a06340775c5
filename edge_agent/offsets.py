"""A followed file's committed offset: one writer for its copies.

Redis holds the authoritative offset (PRODUCE checks and moves it atomically with the
append). The agent keeps two mirrors of it: the file's own (``tf.out.committed``, where
the next batch starts, with the checksum of the bytes before it) and the local checkpoint
(saved every few seconds; read when Redis has nothing, and by the start-up recovery of
files rotated while the agent was down). :class:`Offsets` is the only code that moves the
two, always together and always after Redis answered: a batch accepted
(:meth:`Offsets.committed`) or Redis holding another offset (:meth:`Offsets.moved_to`: a
CONFLICT, or an offset Redis lost, found by :meth:`Offsets.verify`). The file's part it
moves is ``tf.out`` (:class:`~edge_agent.followed.InFlight`). It also saves the checkpoint
when it changed, and drops the entries (local and in Redis) of files gone for the grace
period.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import redis

from tailrace.keys import Keys
from tailrace.logs import RateLimiter, event
from tailrace.wire import RawBatch

from .checkpoint import Checkpoint
from .followed import TailedFile
from .identity import base_of, partition_for
from .tail import TailInput

__all__ = ["Offsets"]

log = logging.getLogger(__name__)


class Offsets:
    """The agent's local mirrors of its files' committed offsets, and their saves."""

    def __init__(self, checkpoint: Checkpoint, path: Path, keys: Keys, partitions: int,
                 count: Callable[[str, int], None]) -> None:
        self.checkpoint = checkpoint
        self.path = path
        self.keys = keys
        self.partitions = partitions
        self.count = count
        self.dirty = False  # changed since the last save
        self.save_now = False  # a change the next pass saves at once (see mark_changed)
        self._saved_live: set[str] = set()  # the identities followed at the last save
        self._limiter = RateLimiter()

    # -- the one writer -------------------------------------------------------------------
    def committed(self, tf: TailedFile) -> RawBatch:
        """Redis accepted ``tf``'s sealed batch: the file goes on from its end."""
        batch = tf.out.accept()
        self._mirror(tf)
        return batch

    def moved_to(self, tf: TailedFile, offset: int) -> None:
        """Redis holds ``offset`` for ``tf`` (it wins): what is buffered is dropped and the
        file is read again from there."""
        tf.seek(offset, tf.crc_before(offset))
        self._mirror(tf)

    def verify(self, inputs: list[TailInput], client: redis.Redis) -> None:
        """Seek back every settled file whose offset Redis no longer has (a Redis that
        restarted without its last writes, or failed over to a replica that missed them).

        Redis wins: a file is re-read from Redis's offset, so the batches Redis lost are
        produced again (offsets and batches roll back together: each PRODUCE is atomic). A
        field that vanished (the first commits lost, or Redis wiped) sends the file back
        to the last offset seen in Redis, or where this agent started following it.
        """
        files = [tf for inp in inputs for tf in inp.table.files.values()
                 if tf.started and tf.out.sealed is None and tf.out.committed > tf.out.verified]
        if not files:
            return
        pipe = client.pipeline(transaction=False)
        for tf in files:
            pipe.hget(self.keys.offsets(tf.partition), tf.identity)
        for tf, raw in zip(files, pipe.execute(), strict=True):
            out = tf.out  # still unsealed: only this loop seals, and not during the round trip
            stored = int(raw) if raw is not None else None
            if stored == out.committed:
                out.confirm(stored)
                continue
            back = stored if stored is not None else out.verified
            self.count("offsets_rolled_back", 1)
            event(log, logging.WARNING, "agent_offset_rolled_back",
                  f"{tf.path}: Redis has offset {stored} where this agent committed up to "
                  f"{out.committed} (Redis restarted without its last writes, or failed over); "
                  f"reading again from {back}", partition=tf.partition, file=tf.identity)
            self.moved_to(tf, back)

    def _mirror(self, tf: TailedFile) -> None:
        out = tf.out
        if self.checkpoint.record(tf.identity, out.committed, tf.path, out.end_crc, tf.real):
            self.save_now = True  # a new file's path on disk at once (recovery.py)
        self.dirty = True

    def mark_changed(self) -> None:
        """Something else in the checkpoint changed that must be on disk at once (new
        generations, written by the starter)."""
        self.dirty = self.save_now = True

    # -- saving ---------------------------------------------------------------------------
    def save(self, inputs: list[TailInput], client: redis.Redis | None) -> None:
        """Touch the followed files' entries, drop expired ones (in Redis too, when
        ``client`` is given), write the checkpoint if anything changed (never raises for an
        unwritable folder: Redis still holds the offsets)."""
        self.save_now = False
        live = {tf.identity for inp in inputs for tf in inp.table.files.values()}
        bases = {tf.ident.base for inp in inputs for tf in inp.table.files.values()}
        self.checkpoint.touch(live, bases)
        dead, dead_bases = self.checkpoint.remove_expired(live, bases)
        if client is not None and (dead or dead_bases):
            pipe = client.pipeline(transaction=False)  # files gone for the grace period
            for identity in dead:
                p = partition_for(base_of(identity), self.partitions)
                pipe.hdel(self.keys.offsets(p), identity)
            for base in dead_bases:
                pipe.hdel(self.keys.generations(partition_for(base, self.partitions)), base)
            pipe.execute()
            self.dirty = True
        if live != self._saved_live:
            # Which files are followed is part of the checkpoint (the entries the save
            # touches): recovery after a rotation while down looks for exactly those.
            self.dirty = True
        if not self.dirty:
            return
        try:
            self.checkpoint.save(self.path)
            self.dirty = False
            self._saved_live = live
        except OSError as exc:
            if self._limiter.allow("checkpoint"):
                event(log, logging.ERROR, "agent_checkpoint_error",
                      f"cannot write {self.path}: {exc.strerror}; Redis still holds "
                      "the committed offsets")
