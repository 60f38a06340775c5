"""A followed file's state, in parts, each changed by one owner.

A :class:`TailedFile` holds three parts and a few slots of its own; each part's fields are
assigned only where the table below says (``tests/test_edge_agent/test_followed.py`` checks
it), everyone else only reads them:

=================  ==========================================  ==============================
part               what                                        changed by
=================  ==========================================  ==============================
``tf.ident``       who the file is: device, inode, first-line  its own methods, each called
(FileIdentity)     checksum, base identity, generation,        by one module: the table
                   partition, a recovery claim                 (rekey, reclaim), recovery
                                                               (pin, mark_copy), the start
                                                               (set_generation, take_pin),
                                                               backfill (claim)
``tf.buf``         the read position and what is buffered:     the :class:`~.reader.Reader`
(ReadBuffer)       ``pos``, ``scanned``, the carry, the batch  (and :meth:`TailedFile.seek`,
                   being built                                 :meth:`TailedFile.take_batch`)
``tf.out``         what is committed and in flight:            its own methods: the input
(InFlight)         ``committed``, ``verified``, the sealed     seals, :mod:`.offsets` accepts,
                   batch, the checksums of their ends          moves and confirms (backfill:
                                                               seals and accepts its own)
own slots          where it is and how it is followed: path,   the tail input and its table
                   descriptor, size, mtime, rotation, start    (``tail.py``, ``files.py``)
=================  ==========================================  ==============================

The offsets keep their order: ``out.committed <= buf.pos <= buf.scanned <= size`` (see
:mod:`.reader`).
"""

from __future__ import annotations

import os
import time

from tailrace.wire import RawBatch

from .identity import FileId, base_of, end_checksum, generation_of, identity_key, partition_for

__all__ = ["FileIdentity", "InFlight", "ReadBuffer", "TailedFile"]


class FileIdentity:
    """Who a followed file is (see :mod:`.identity`); the identity and partition always
    follow the base identity and generation (changed only through these methods)."""

    __slots__ = ("_agent", "_partitions", "adopted", "base", "fid", "generation", "identity",
                 "partition", "pinned")

    def __init__(self, fid: FileId, agent: str, partitions: int) -> None:
        self._agent = agent
        self._partitions = partitions
        self.fid = fid
        self.base = fid.key(agent)
        self.generation = 0
        self.identity = self.base
        self.partition = partition_for(self.base, partitions)
        # A recovery claim (edge_agent.recovery, a rotated sibling found at start-up): the
        # generation of the checkpointed identity it finishes (used once, by the start), and
        # whether it carries another inode's identity (a copy, a decompressed .gz: never
        # retired).
        self.pinned: int | None = None
        self.adopted = False

    def set_generation(self, generation: int) -> None:
        """The start placed the file in ``generation``."""
        self.generation = generation
        self.identity = identity_key(self.base, generation)

    def claim(self, identity: str) -> None:
        """Take another file's identity (backfill of a rotated copy of a file read)."""
        self._rebase(base_of(identity))
        self.set_generation(generation_of(identity))

    def pin(self, identity: str, copy: bool) -> None:
        """Recovery: the file finishes ``identity`` (started at its committed offset)."""
        self._rebase(base_of(identity))
        self.pinned = generation_of(identity)
        self.adopted = copy

    def mark_copy(self) -> None:
        """Recovery: a decompressed scratch copy under its own identity (never retired)."""
        self.adopted = True

    def take_pin(self) -> int:
        """The start: the pinned generation, used once."""
        gen, self.pinned = self.pinned, None
        assert gen is not None
        return gen

    def reclaim(self) -> None:
        """A recovery claim that did not hold: the file's own identity again."""
        self._rebase(self.fid.key(self._agent))
        self.adopted = False

    def rekey(self, fid: FileId) -> None:
        """Rewritten with another first line: the identity follows it."""
        self.fid = fid
        self._rebase(fid.key(self._agent))

    def _rebase(self, base: str) -> None:
        self.base = base
        self.partition = partition_for(base, self._partitions)


class ReadBuffer:
    """Where a file is read and what is buffered (the :class:`~.reader.Reader`'s)."""

    __slots__ = ("batch_at", "carry", "carry_at", "carry_since", "lines", "nbytes", "offsets",
                 "partial_at", "pos", "scanned", "skipping", "streams", "times")

    def __init__(self) -> None:
        self.pos = 0
        self.scanned = 0
        self.carry = b""
        self.carry_at = 0.0  # when a line last joined the carry
        self.carry_since = 0.0  # when the carry's oldest message started waiting
        self.lines: list[bytes] = []
        self.offsets: list[int] = []
        self.times: list[float] | None = None
        self.streams: list[str] | None = None
        self.nbytes = 0
        self.batch_at = 0.0  # when the batch being built got its first line
        self.skipping = False  # inside an over-long line being truncated or skipped
        self.partial_at = -1  # the size at which only a partial last line was found

    def seek(self, offset: int) -> None:
        """Drop everything buffered and continue at ``offset``."""
        self.lines, self.offsets, self.times, self.streams, self.nbytes = [], [], None, None, 0
        self.carry = b""
        self.skipping = False
        self.partial_at = -1
        self.pos = self.scanned = offset

    def take(self) -> tuple[list[bytes], list[int], list[float] | None, list[str] | None]:
        """The batch built so far (lines, offsets, times, streams); it starts empty again."""
        taken = self.lines, self.offsets, self.times, self.streams
        self.lines, self.offsets, self.times, self.streams, self.nbytes = [], [], None, None, 0
        return taken


class InFlight:
    """What is committed and what waits for its commit (changed only by these methods:
    the input seals, :class:`~.offsets.Offsets` accepts, moves and confirms)."""

    __slots__ = ("committed", "end_crc", "sealed", "sealed_crc", "verified")

    def __init__(self) -> None:
        self.committed = 0  # end of the last batch Redis accepted
        self.verified = 0  # the last offset seen in Redis (or where following started)
        self.sealed: RawBatch | None = None  # waiting for its commit
        # Checksums of the bytes just before ``committed`` and before the sealed batch's end
        # (see identity.has_end): the file still holds what was read, or it is another one.
        self.end_crc: int | None = None
        self.sealed_crc: int | None = None

    def place(self, offset: int, crc: int | None) -> None:
        """Committed up to ``offset`` as Redis (or the checkpoint) says; nothing in flight."""
        self.sealed = None
        self.sealed_crc = None
        self.committed = self.verified = offset
        self.end_crc = crc

    def seal(self, batch: RawBatch, crc: int | None) -> None:
        """The input: ``batch`` waits for its commit."""
        self.sealed = batch
        self.sealed_crc = crc

    def accept(self) -> RawBatch:
        """Redis accepted the sealed batch: committed up to its end."""
        batch = self.sealed
        assert batch is not None
        self.sealed = None
        self.committed = batch.end
        self.end_crc = self.sealed_crc
        return batch

    def confirm(self, offset: int) -> None:
        """Redis holds ``offset``, the committed one."""
        self.verified = offset


class TailedFile:
    """One followed file: its identity (``ident``), its read buffer (``buf``), what is
    committed and in flight (``out``), and where it is (its own slots, the table's)."""

    __slots__ = ("buf", "fd", "folder", "ident", "initial", "last_active", "meta", "mtime_ns",
                 "out", "path", "real", "restart", "rotated_at", "size", "started", "tag")

    def __init__(self, path: str, fd: int, ident: FileIdentity, tag: str,
                 meta: dict[str, str], *, real: str | None = None, size: int = 0,
                 mtime_ns: int = 0, now: float = 0.0, initial: bool = False) -> None:
        self.path = path
        self.fd = fd  # -1 while dormant (closed by the LRU; reopened when it grows)
        self.ident = ident
        self.buf = ReadBuffer()
        self.out = InFlight()
        self.tag = tag
        self.meta = meta
        self.real = real or path  # the file's own path (symlinks resolved; a rotated sibling's)
        self.folder = os.path.dirname(self.real)  # where the file itself lives
        self.size = size
        self.mtime_ns = mtime_ns
        self.last_active = now
        self.initial = initial  # found by the agent's first scan (may start at its end)
        self.started = False  # the agent set its start offset (from Redis or checkpoint)
        self.restart: str | None = None  # "truncated" / "rewritten": needs a new identity
        self.rotated_at: float | None = None  # renamed away or deleted: drain, then close

    @property
    def identity(self) -> str:
        """The identity its batches carry (read-only: see :class:`FileIdentity`)."""
        return self.ident.identity

    @property
    def partition(self) -> int:
        return self.ident.partition

    @property
    def committed(self) -> int:
        return self.out.committed

    def seek(self, offset: int, crc: int | None) -> None:
        """Drop everything buffered and in flight and continue at ``offset``, committed
        (``crc``: the checksum of the bytes before it, None when unknown)."""
        self.buf.seek(offset)
        self.out.place(offset, crc)

    def crc_before(self, offset: int) -> int | None:
        """The checksum of the bytes before ``offset`` (see :func:`.identity.has_end`); None
        when unreadable (then the offset is not checked)."""
        try:
            return end_checksum(self.fd, offset)
        except OSError:
            return None

    def take_batch(self, agent: str, input_id: str) -> RawBatch:
        """The lines released so far as a batch from ``committed`` to ``pos`` (the batch
        being built starts empty again)."""
        pos = self.buf.pos
        lines, offsets, times, streams = self.buf.take()
        return RawBatch(
            agent=agent, input=input_id, tag=self.tag, path=self.path, file=self.ident.identity,
            start=self.out.committed, end=pos, lines=lines, offsets=offsets,
            times=times, streams=streams, meta=self.meta, time=time.time(),
        )

    @property
    def held_bytes(self) -> int:
        """Bytes of file content this file holds in memory (batch, sealed batch, carry)."""
        sealed = self.out.sealed
        b = self.buf
        return b.nbytes + len(b.carry) + (sealed.end - sealed.start if sealed else 0)

    @property
    def settled(self) -> bool:
        """Everything read so far is committed; nothing is held or being skipped."""
        b = self.buf
        return (self.out.sealed is None and not b.lines and not b.carry
                and self.out.committed == b.pos == b.scanned
                and self.restart is None and not b.skipping)

    @property
    def idle(self) -> bool:
        """Settled and nothing new to read (at most a partial last line already looked at):
        may be closed and reopened later."""
        b, out = self.buf, self.out  # settled, inlined: asked of every file on every pass
        return (out.sealed is None and not b.lines and not b.carry
                and out.committed == b.pos == b.scanned and self.restart is None
                and not b.skipping and (b.scanned == self.size or self.size == b.partial_at))
