"""Reading one followed file: bytes -> decoded messages -> the batch being built.

A :class:`TailedFile` keeps four offsets, always in this order::

    committed <= pos <= scanned <= size
    committed  end of the last batch Redis accepted (the start of the batch being built)
    pos        end of the messages released into the batch (the batch's end if sealed now)
    scanned    end of the complete lines read; [pos, scanned) is ``carry``: lines of a
               message that may still grow (a CRI P run, a docker partial, a multiline
               message), kept in memory (bounded) and decoded again with the next lines

The :class:`Reader` never talks to Redis and never blocks; the tail input decides which
file reads when (fairness, memory, backpressure) and seals batches.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from tailrace.logs import RateLimiter, event
from tailrace.wire import RawBatch

from .formats import Decoded, Decoder, line_cap, make_decoder, message_limit
from .identity import FileId, identity_key
from .multiline import MultilineRule
from .options import TailOptions

__all__ = ["Reader", "TailedFile"]

log = logging.getLogger(__name__)

# The oldest pending message is flushed after this many flush timeouts even while lines
# of it (or of another stream that must wait for it) keep arriving.
MAX_PENDING_FLUSHES = 10


class TailedFile:
    """One followed file: where it is read, what is batched, what is committed."""

    __slots__ = (
        "adopted", "base", "batch_at", "carry", "carry_at", "carry_since", "committed",
        "end_crc", "fd", "fid", "folder", "generation", "identity", "initial", "last_active",
        "lines", "meta", "mtime_ns", "nbytes", "partial_at", "pinned", "real",
        "offsets", "partition", "path", "pos", "restart", "rotated_at", "scanned", "sealed",
        "sealed_crc", "size", "skipping", "started", "streams", "tag", "times", "verified",
    )

    def __init__(self, path: str, fd: int, fid: FileId, agent: str, partition: int,
                 tag: str, meta: dict[str, str]) -> None:
        self.path = path
        self.fd = fd  # -1 while dormant (closed by the LRU; reopened when it grows)
        self.fid = fid
        self.base = fid.key(agent)
        self.generation = 0
        self.identity = self.base
        self.partition = partition
        self.tag = tag
        self.meta = meta
        self.real = path  # the file's own path (symlinks resolved; a rotated sibling's name)
        self.folder = os.path.dirname(path)  # where the file itself lives (symlinks resolved)
        # Set by edge_agent.recovery for a rotated sibling found at start-up: the generation
        # of the checkpointed identity it finishes (used once, by the start), and whether
        # it carries another inode's identity (a copy, a decompressed .gz: never retired).
        self.pinned: int | None = None
        self.adopted = False
        self.initial = False  # found by the agent's first scan (may start at its end)
        self.started = False  # the agent set its start offset (from Redis or checkpoint)
        self.restart: str | None = None  # "truncated" / "rewritten": needs a new identity
        self.pos = 0
        self.committed = 0
        self.verified = 0  # the last offset seen in Redis (or where following started)
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
        self.sealed: RawBatch | None = None  # waiting for its commit
        # Checksums of the bytes just before ``committed`` and before the sealed batch's end
        # (see identity.has_end): the file still holds what was read, or it is another one.
        self.end_crc: int | None = None
        self.sealed_crc: int | None = None
        self.rotated_at: float | None = None  # renamed away or deleted: drain, then close
        self.skipping = False  # inside an over-long line being truncated or skipped
        self.size = 0
        self.mtime_ns = 0
        self.partial_at = -1  # the size at which only a partial last line was found
        self.last_active = 0.0

    def set_generation(self, generation: int) -> None:
        self.generation = generation
        self.identity = identity_key(self.base, generation)

    def seek(self, offset: int) -> None:
        """Drop everything buffered and continue at ``offset`` (a committed offset)."""
        self.sealed = None
        self.end_crc = self.sealed_crc = None  # unknown until the caller sets it
        self.lines, self.offsets, self.times, self.streams, self.nbytes = [], [], None, None, 0
        self.carry = b""
        self.skipping = False
        self.partial_at = -1
        self.pos = self.committed = self.scanned = offset

    def take_batch(self, agent: str, input_id: str) -> RawBatch:
        """The lines released so far as a batch from ``committed`` to ``pos`` (the batch
        being built starts empty again)."""
        batch = RawBatch(
            agent=agent, input=input_id, tag=self.tag, path=self.path, file=self.identity,
            start=self.committed, end=self.pos, lines=self.lines, offsets=self.offsets,
            times=self.times, streams=self.streams, meta=self.meta, time=time.time(),
        )
        self.lines, self.offsets, self.times, self.streams, self.nbytes = [], [], None, None, 0
        return batch

    @property
    def held_bytes(self) -> int:
        """Bytes of file content this file holds in memory (batch, sealed batch, carry)."""
        sealed = self.sealed
        return self.nbytes + len(self.carry) + (sealed.end - sealed.start if sealed else 0)

    @property
    def settled(self) -> bool:
        """Everything read so far is committed; nothing is held or being skipped."""
        return (self.sealed is None and not self.lines and not self.carry
                and self.committed == self.pos == self.scanned
                and self.restart is None and not self.skipping)

    @property
    def idle(self) -> bool:
        """Settled and nothing new to read (at most a partial last line already looked at):
        may be closed and reopened later."""
        return self.settled and (self.scanned == self.size or self.size == self.partial_at)


class Reader:
    """Reads files in chunks, decodes them, applies line limits, fills their batches."""

    def __init__(self, opts: TailOptions, decode: Decoder, container: bool, flush_s: float,
                 pending_cap: int, count: Callable[[str, int], None], input_id: str) -> None:
        self.decode = decode
        self.container = container
        self.flush_s = flush_s
        self.max_pending_s = flush_s * MAX_PENDING_FLUSHES
        self.pending_cap = pending_cap
        self.max_line = line_cap(opts.format, opts.max_line_bytes)  # physical lines
        self.read_size = min(opts.read_bytes, self.max_line + 1)
        self.long_lines = opts.long_lines
        self.batch_lines = opts.batch_lines
        self.rule_free = opts.multiline is None
        self.count = count
        self.input_id = input_id
        self._limiter = RateLimiter(30.0)

    @classmethod
    def for_options(cls, opts: TailOptions, count: Callable[[str, int], None],
                    input_id: str) -> Reader:
        """The reader of a tail input's files (and of a backfilled file: the same lines)."""
        rule = MultilineRule.build(opts.multiline) if opts.multiline else None
        flush_s = rule.flush_s if rule else opts.partial_flush_ms / 1000
        decode = make_decoder(opts.format, rule, message_limit(opts.format, opts.max_line_bytes,
                                                               opts.long_lines))
        return cls(opts, decode, opts.format != "plain", flush_s,
                   max(opts.max_line_bytes, rule.max_bytes if rule else 0), count, input_id)

    def read(self, tf: TailedFile, now: float) -> int:
        """Read one chunk of ``tf`` (from ``scanned`` up to its known ``size``).

        Returns:
            the number of file bytes consumed or moved into the carry (0: nothing new).

        Raises:
            OSError: the read failed (the caller logs it and retries later).
        """
        if tf.scanned >= tf.size or tf.size == tf.partial_at:
            self.flush_if_due(tf, now)
            return 0
        data = os.pread(tf.fd, self.read_size, tf.scanned)
        if not data:
            return 0
        if tf.skipping:
            nl = data.find(b"\n")
            tf.last_active = now
            if nl < 0:
                tf.pos = tf.scanned = tf.scanned + len(data)
                self.count("long_line_bytes_skipped", len(data))
                return len(data)
            tf.pos = tf.scanned = tf.scanned + nl + 1
            self.count("long_line_bytes_skipped", nl + 1)
            tf.skipping = False
            return nl + 1
        nl = data.rfind(b"\n")
        if nl < 0 and len(data) == self.read_size and self.read_size <= self.max_line:
            data = os.pread(tf.fd, self.max_line + 1, tf.scanned)  # a long line: look further
            nl = data.rfind(b"\n")
        if nl < 0:
            if len(data) > self.max_line:
                self._long_line(tf, data[: self.max_line], now)
                return self.max_line
            tf.partial_at = tf.size  # only a partial last line: look again when it grows
            self.flush_if_due(tf, now)
            return 0
        carry = tf.carry
        complete = len(carry) + nl + 1
        buf = carry + data if carry else data
        d = self.decode(buf, tf.pos, False)
        tf.last_active = now
        room = self.batch_lines - len(tf.lines)
        if len(d.lines) > room > 0:
            d = self._cut(buf, tf.pos, d, room)
            self.append(tf, d, d.consumed, now)
            tf.carry = b""  # the rest is read again from the file for the next batch
            tf.scanned = tf.pos
            return d.consumed
        if d.lines:
            self.append(tf, d, d.consumed, now)
        elif d.consumed:
            tf.pos += d.consumed  # e.g. only skipped bytes
        rest = buf[d.consumed : complete] if d.consumed < complete else b""
        if rest:
            if d.consumed or not carry:
                tf.carry_since = now  # the oldest pending message changed
            tf.carry_at = now
        tf.carry = rest
        tf.scanned += nl + 1
        if len(rest) > self.pending_cap:
            self.flush(tf, "size", now)
        elif rest and now - tf.carry_since >= self.max_pending_s:
            self.flush(tf, "timeout", now)  # lines keep coming, yet its oldest message waits
        return nl + 1

    def read_last_line(self, tf: TailedFile, now: float) -> None:
        """Release a last line without newline: the file is complete (rotated and quiet, or
        backfilled). Call it with nothing held (``tf.settled``, or the carry flushed).

        Raises:
            OSError: the read failed.
        """
        tail = os.pread(tf.fd, min(tf.size - tf.scanned, self.max_line), tf.scanned)
        if tail and b"\n" not in tail:
            tf.last_active = now
            d = self.decode(tail + b"\n", tf.pos, True)
            self.append(tf, d, len(tail), now)
            tf.scanned = tf.pos

    def _cut(self, buf: bytes, base: int, d: Decoded, room: int) -> Decoded:
        """The first ``room`` messages of ``d`` (a batch holds ``batch_lines`` at most)."""
        cut = d.offsets[room] - base
        if d.times is None and not self.container and self.rule_free:
            return Decoded(d.lines[:room], d.offsets[:room], None, None, cut)
        shorter = self.decode(buf[:cut], base, False)  # stop at a safe point before the cut
        return shorter if shorter.consumed else d

    def flush_if_due(self, tf: TailedFile, now: float) -> None:
        """Emit a pending message that waited too long for its end or its next line."""
        if tf.carry and (now - tf.carry_at >= self.flush_s
                         or now - tf.carry_since >= self.max_pending_s):
            self.flush(tf, "timeout", now)

    def flush(self, tf: TailedFile, why: str, now: float) -> None:
        """Emit the pending message(s) as they are (timeout, size bound, truncation, stop)."""
        if not tf.carry:
            return
        d = self.decode(tf.carry, tf.pos, True)
        self.append(tf, d, len(tf.carry), now)
        tf.carry = b""
        self.count(f"pending_flushed_{why}", 1)

    def append(self, tf: TailedFile, d: Decoded, consumed: int, now: float) -> None:
        """Add decoded messages to the batch and move ``pos`` past ``consumed`` bytes."""
        if d.long:
            self._long_messages(tf, d)
        if d.lines:
            if not tf.lines:
                tf.batch_at = now
            tf.lines.extend(d.lines)
            tf.offsets.extend(d.offsets)
            if d.times is not None:
                if tf.times is None or tf.streams is None:
                    tf.times, tf.streams = [], []
                tf.times.extend(d.times)
                tf.streams.extend(d.streams or ())
        tf.nbytes += consumed
        tf.pos += consumed

    def _long_messages(self, tf: TailedFile, d: Decoded) -> None:
        """Container messages over ``max_line_bytes``: the decoder applied ``long_lines``."""
        policy = self.long_lines
        self.count(f"long_lines_{policy}", d.long)
        if d.long_skipped:
            self.count("long_line_bytes_skipped", d.long_skipped)
        if self._limiter.allow(tf.path):
            event(log, logging.WARNING, "tail_long_line",
                  f"{tf.path}: {d.long} message(s) near byte {tf.pos} longer than "
                  f"max_line_bytes; long_lines={policy} (raise max_line_bytes to keep such "
                  "messages whole)", input=self.input_id, partition=tf.partition)

    def _long_line(self, tf: TailedFile, head: bytes, now: float) -> None:
        policy = self.long_lines
        self.count(f"long_lines_{policy}", 1)
        if self._limiter.allow(tf.path):
            event(log, logging.WARNING, "tail_long_line",
                  f"{tf.path}: the line at byte {tf.scanned} is longer than max_line_bytes "
                  f"({self.max_line}); long_lines={policy} (raise max_line_bytes to keep such "
                  "lines whole)", input=self.input_id, partition=tf.partition)
        tf.last_active = now
        self.flush(tf, "long_line", now)  # pending messages come first
        if policy == "skip":
            tf.pos += len(head)
            self.count("long_line_bytes_skipped", len(head))
        else:
            d = self.decode(head + b"\n", tf.pos, True)
            self.append(tf, d, len(head), now)
        tf.scanned = tf.pos
        tf.skipping = policy != "split"
