"""Reading one followed file: bytes -> decoded messages -> the batch being built.

A :class:`~.followed.TailedFile` keeps four offsets, always in this order::

    out.committed <= buf.pos <= buf.scanned <= size
    committed  end of the last batch Redis accepted (the start of the batch being built)
    pos        end of the messages released into the batch (the batch's end if sealed now)
    scanned    end of the complete lines read; [pos, scanned) is ``carry``: lines of a
               message that may still grow (a CRI P run, a docker partial, a multiline
               message), kept in memory (bounded) and decoded again with the next lines

The :class:`Reader` owns the file's read buffer (``tf.buf``, a
:class:`~.followed.ReadBuffer`: ``pos``, ``scanned``, the carry and the batch being built)
and only reads the rest. It never talks to Redis and never blocks; the tail input decides
which file reads when (fairness, memory, backpressure), when it was last active, and seals
batches.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from tailrace.logs import RateLimiter, event

from .followed import TailedFile
from .formats import Decoder, line_cap, make_decoder, message_limit
from .joiner import Decoded
from .multiline import MultilineRule
from .options import TailOptions

__all__ = ["Reader"]

log = logging.getLogger(__name__)

# The oldest pending message is flushed after this many flush timeouts even while lines
# of it (or of another stream that must wait for it) keep arriving.
MAX_PENDING_FLUSHES = 10


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
        b = tf.buf
        if b.scanned >= tf.size or tf.size == b.partial_at:
            self.flush_if_due(tf, now)
            return 0
        data = os.pread(tf.fd, self.read_size, b.scanned)
        if not data:
            return 0
        if b.skipping:
            nl = data.find(b"\n")
            if nl < 0:
                b.pos = b.scanned = b.scanned + len(data)
                self.count("long_line_bytes_skipped", len(data))
                return len(data)
            b.pos = b.scanned = b.scanned + nl + 1
            self.count("long_line_bytes_skipped", nl + 1)
            b.skipping = False
            return nl + 1
        nl = data.rfind(b"\n")
        if nl < 0 and len(data) == self.read_size and self.read_size <= self.max_line:
            data = os.pread(tf.fd, self.max_line + 1, b.scanned)  # a long line: look further
            nl = data.rfind(b"\n")
        if nl < 0:
            if len(data) > self.max_line:
                self._long_line(tf, data[: self.max_line], now)
                return self.max_line
            b.partial_at = tf.size  # only a partial last line: look again when it grows
            self.flush_if_due(tf, now)
            return 0
        carry = b.carry
        complete = len(carry) + nl + 1
        buf = carry + data if carry else data
        d = self.decode(buf, b.pos, False)
        room = self.batch_lines - len(b.lines)
        if len(d.lines) > room > 0:
            d = self._cut(buf, b.pos, d, room)
            self.append(tf, d, d.consumed, now)
            b.carry = b""  # the rest is read again from the file for the next batch
            b.scanned = b.pos
            return d.consumed
        if d.lines:
            self.append(tf, d, d.consumed, now)
        elif d.consumed:
            b.pos += d.consumed  # e.g. only skipped bytes
        rest = buf[d.consumed : complete] if d.consumed < complete else b""
        if rest:
            if d.consumed or not carry:
                b.carry_since = now  # the oldest pending message changed
            b.carry_at = now
        b.carry = rest
        b.scanned += nl + 1
        if len(rest) > self.pending_cap:
            self.flush(tf, "size", now)
        elif rest and now - b.carry_since >= self.max_pending_s:
            self.flush(tf, "timeout", now)  # lines keep coming, yet its oldest message waits
        return nl + 1

    def read_last_line(self, tf: TailedFile, now: float) -> None:
        """Release a last line without newline: the file is complete (rotated and quiet, or
        backfilled). Call it with nothing held (``tf.settled``, or the carry flushed).

        Raises:
            OSError: the read failed.
        """
        b = tf.buf
        tail = os.pread(tf.fd, min(tf.size - b.scanned, self.max_line), b.scanned)
        if tail and b"\n" not in tail:
            d = self.decode(tail + b"\n", b.pos, True)
            self.append(tf, d, len(tail), now)
            b.scanned = b.pos

    def _cut(self, buf: bytes, base: int, d: Decoded, room: int) -> Decoded:
        """The first ``room`` messages of ``d`` (a batch holds ``batch_lines`` at most)."""
        cut = d.offsets[room] - base
        if d.times is None and not self.container and self.rule_free:
            return Decoded(d.lines[:room], d.offsets[:room], None, None, cut)
        shorter = self.decode(buf[:cut], base, False)  # stop at a safe point before the cut
        return shorter if shorter.consumed else d

    def flush_if_due(self, tf: TailedFile, now: float) -> None:
        """Emit a pending message that waited too long for its end or its next line."""
        b = tf.buf
        if b.carry and (now - b.carry_at >= self.flush_s
                        or now - b.carry_since >= self.max_pending_s):
            self.flush(tf, "timeout", now)

    def flush(self, tf: TailedFile, why: str, now: float) -> None:
        """Emit the pending message(s) as they are (timeout, size bound, truncation, stop)."""
        b = tf.buf
        if not b.carry:
            return
        d = self.decode(b.carry, b.pos, True)
        self.append(tf, d, len(b.carry), now)
        b.carry = b""
        self.count(f"pending_flushed_{why}", 1)

    def append(self, tf: TailedFile, d: Decoded, consumed: int, now: float) -> None:
        """Add decoded messages to the batch and move ``pos`` past ``consumed`` bytes."""
        b = tf.buf
        if d.long:
            self._long_messages(tf, d)
        if d.lines:
            if not b.lines:
                b.batch_at = now
            b.lines.extend(d.lines)
            b.offsets.extend(d.offsets)
            if d.times is not None:
                if b.times is None or b.streams is None:
                    b.times, b.streams = [], []
                b.times.extend(d.times)
                b.streams.extend(d.streams or ())
        b.nbytes += consumed
        b.pos += consumed

    def _long_messages(self, tf: TailedFile, d: Decoded) -> None:
        """Container messages over ``max_line_bytes``: the decoder applied ``long_lines``."""
        b = tf.buf
        policy = self.long_lines
        self.count(f"long_lines_{policy}", d.long)
        if d.long_skipped:
            self.count("long_line_bytes_skipped", d.long_skipped)
        if self._limiter.allow(tf.path):
            event(log, logging.WARNING, "tail_long_line",
                  f"{tf.path}: {d.long} message(s) near byte {b.pos} longer than "
                  f"max_line_bytes; long_lines={policy} (raise max_line_bytes to keep such "
                  "messages whole)", input=self.input_id, partition=tf.partition)

    def _long_line(self, tf: TailedFile, head: bytes, now: float) -> None:
        b = tf.buf
        policy = self.long_lines
        self.count(f"long_lines_{policy}", 1)
        if self._limiter.allow(tf.path):
            event(log, logging.WARNING, "tail_long_line",
                  f"{tf.path}: the line at byte {b.scanned} is longer than max_line_bytes "
                  f"({self.max_line}); long_lines={policy} (raise max_line_bytes to keep such "
                  "lines whole)", input=self.input_id, partition=tf.partition)
        self.flush(tf, "long_line", now)  # pending messages come first
        if policy == "skip":
            b.pos += len(head)
            self.count("long_line_bytes_skipped", len(head))
        else:
            d = self.decode(head + b"\n", b.pos, True)
            self.append(tf, d, len(head), now)
        b.scanned = b.pos
        b.skipping = policy != "split"
