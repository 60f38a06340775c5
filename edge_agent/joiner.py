"""Assembling a file's messages from its lines, for the decoders of :mod:`edge_agent.formats`.

A :class:`Joiner` takes the physical lines a decoder has parsed (a container runtime's
partial runs, complete lines) and joins, per stream, the partials of one message and the
lines of one multiline message (a :class:`~edge_agent.multiline.MultilineRule`); it cuts a
container message over its :class:`MessageLimit`, and releases messages only up to a safe
point (nothing open before it), in the order they start: what a decoder returns,
:class:`Decoded`. The formats' syntax (CRI, docker JSON, plain) stays in ``formats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter

from .multiline import MultilineRule

__all__ = ["Decoded", "Joiner", "MessageLimit"]


@dataclass(slots=True)
class Decoded:
    lines: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[float] | None = None
    streams: list[str] | None = None
    consumed: int = 0  # bytes of the chunk consumed (always ends after a newline)
    long: int = 0  # container messages over the MessageLimit (split, truncated or skipped)
    long_skipped: int = 0  # bytes of the messages skipped


@dataclass(frozen=True, slots=True)
class MessageLimit:
    """``max_line_bytes`` and ``long_lines`` applied to a container runtime's *message*.

    The runtime's header (time, stream) and its JSON or ``P``/``F`` framing stay intact, so
    every piece of a split message keeps its time and stream. Piece ``k`` starts at offset
    ``start + k * max_bytes``: inside the message's own bytes, so every record keeps a
    distinct, deterministic id.
    """

    max_bytes: int
    policy: str  # "split" | "truncate" | "skip"

    def pieces(self, msg: bytes) -> list[bytes]:
        n = self.max_bytes
        if self.policy == "skip":
            return []
        if self.policy == "truncate":
            return [msg[:n]]
        return [msg[i : i + n] for i in range(0, len(msg), n)]


_start = itemgetter(0)


class _Open:
    """An open partial run or multiline message of one stream (a few per file at most)."""

    __slots__ = ("end", "nbytes", "nlines", "parts", "start", "time")

    def __init__(self, msg: bytes, start: int, t: float, end: int) -> None:
        self.parts = [msg]
        self.start = start
        self.time = t
        self.end = end
        self.nbytes = len(msg)
        self.nlines = 1

    def add(self, msg: bytes, end: int, sep: int) -> None:
        self.parts.append(msg)
        self.end = end
        self.nbytes += len(msg) + sep
        self.nlines += 1

    def joined(self, sep: bytes) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else sep.join(self.parts)


class Joiner:
    """Joins partial runs and multiline messages per stream; releases at safe points.

    Offsets are absolute. ``partial`` holds each stream's open container partial run,
    ``groups`` each stream's open multiline message. Complete messages wait in ``staged``
    as (start, end, message, time, stream) while something open starts before them, and
    are released in start order once no open run or message straddles them.
    """

    __slots__ = ("container", "groups", "limit", "lines", "long", "long_skipped", "offsets",
                 "partial", "rule", "safe", "staged", "streams", "times")

    def __init__(self, rule: MultilineRule | None, container: bool, base: int,
                 limit: MessageLimit | None = None) -> None:
        self.rule = rule
        self.container = container
        self.limit = limit
        self.long = 0
        self.long_skipped = 0
        self.lines: list[bytes] = []
        self.offsets: list[int] = []
        self.times: list[float] = []
        self.streams: list[str] = []
        self.partial: dict[str, _Open] = {}
        self.groups: dict[str, _Open] = {}
        self.staged: list[tuple[int, int, bytes, float, str]] = []
        self.safe = base

    def part(self, stream: str, msg: bytes, start: int, t: float, end: int) -> None:
        run = self.partial.get(stream)
        if run is None:
            self.partial[stream] = _Open(msg, start, t, end)
        else:
            run.add(msg, end, 0)

    def full(self, stream: str, msg: bytes, start: int, t: float, end: int) -> None:
        if (not self.partial and not self.staged and self.rule is None
                and (self.limit is None or len(msg) <= self.limit.max_bytes)):
            # Nearly every line: nothing open, staged or grouped, not too long. Straight
            # out, as _message would put it (two calls a line fewer).
            self._emit(start, msg, t, stream)
            self.safe = end
            return
        run = self.partial.pop(stream, None)
        if run is not None:
            run.add(msg, end, 0)
            msg, start, t = run.joined(b""), run.start, run.time
        if self.limit is not None and len(msg) > self.limit.max_bytes:
            for k, piece in self._over_limit(msg):
                self._message(stream, piece, start + k, t, end)
            self._release(end)
            return
        self._message(stream, msg, start, t, end)

    def _over_limit(self, msg: bytes) -> list[tuple[int, bytes]]:
        """(offset from the message's start, piece) of a message over the limit; counted."""
        limit = self.limit
        assert limit is not None
        self.long += 1
        pieces = limit.pieces(msg)
        if not pieces:
            self.long_skipped += len(msg)
        return [(k * limit.max_bytes, piece) for k, piece in enumerate(pieces)]

    def _message(self, stream: str, msg: bytes, start: int, t: float, end: int) -> None:
        if self.rule is not None:
            self._group(stream, msg, start, t, end)
        elif not self.partial and not self.staged:
            self._emit(start, msg, t, stream)  # the common case: nothing open, no staging
            self.safe = end
            return
        else:
            self.staged.append((start, end, msg, t, stream))
        self._release(end)

    def _group(self, stream: str, msg: bytes, start: int, t: float, end: int) -> None:
        rule = self.rule
        assert rule is not None
        g = self.groups.get(stream)
        if g is not None and (rule.starts(msg) or g.nlines >= rule.max_lines
                              or g.nbytes + len(msg) + 1 > rule.max_bytes):
            self._close_group(stream, g)
            g = None
        if g is None:
            self.groups[stream] = _Open(msg, start, t, end)
        else:
            g.add(msg, end, 1)

    def _close_group(self, stream: str, g: _Open) -> None:
        del self.groups[stream]
        self.staged.append((g.start, g.end, g.joined(b"\n"), g.time, stream))

    def _release(self, next_pos: int) -> None:
        limit = next_pos
        for o in self.partial.values():
            limit = min(limit, o.start)
        for o in self.groups.values():
            limit = min(limit, o.start)
        staged = self.staged
        if staged:
            moved = True
            while moved:  # a staged message straddling the limit pulls it back to its start
                moved = False
                for s in staged:
                    if s[0] < limit < s[1]:
                        limit, moved = s[0], True
            ready = [s for s in staged if s[1] <= limit]
            if ready:
                ready.sort(key=_start)  # stable: the pieces of one message keep their order
                for start, _end, msg, t, stream in ready:
                    self._emit(start, msg, t, stream)
                self.staged = [s for s in staged if s[1] > limit]
        if limit > self.safe:
            self.safe = limit

    def _emit(self, start: int, msg: bytes, t: float, stream: str) -> None:
        self.lines.append(msg)
        self.offsets.append(start)
        if self.container:
            self.times.append(t)
            self.streams.append(stream)

    def done(self, base: int, final: bool, end: int) -> Decoded:
        """The released messages; with ``final`` everything open is closed first."""
        if final:
            for stream in list(self.partial):
                run = self.partial.pop(stream)
                msg = run.joined(b"")
                over = self.limit is not None and len(msg) > self.limit.max_bytes
                for k, piece in self._over_limit(msg) if over else [(0, msg)]:
                    if self.rule is not None:
                        self._group(stream, piece, run.start + k, run.time, run.end)
                    else:
                        self.staged.append((run.start + k, run.end, piece, run.time, stream))
            for stream, g in list(self.groups.items()):
                self._close_group(stream, g)
            self._release(end)
        if self.container:
            return Decoded(self.lines, self.offsets, self.times, self.streams,
                           self.safe - base, self.long, self.long_skipped)
        return Decoded(self.lines, self.offsets, None, None, self.safe - base)
