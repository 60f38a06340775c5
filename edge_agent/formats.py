"""Decoding file bytes into complete logical messages: plain, CRI and docker, + multiline.

A decoder takes a chunk of whole physical lines read at file offset ``base`` and returns
the messages, their start offsets and how many bytes were consumed. It consumes only up to
a *safe point*: a line boundary before which every message is complete and after which
none has started. A CRI ``P`` (partial) run, a docker line without its final newline, or a
multiline message that may still grow is left unconsumed until its end arrives, so the
committed offset never falls inside a message and a restart never loses half of one.

With ``final=True`` (the message waited longer than its flush timeout, grew past its size
bound, or the agent is stopping) every open run and message is closed and the whole chunk
is consumed.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add, itemgetter

import orjson

from .multiline import MultilineRule

__all__ = [
    "Decoded",
    "Decoder",
    "MessageLimit",
    "line_cap",
    "decode_plain",
    "line_offsets",
    "make_decoder",
    "message_limit",
    "parse_rfc3339",
]


@dataclass(slots=True)
class Decoded:
    lines: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[float] | None = None
    streams: list[str] | None = None
    consumed: int = 0  # bytes of the chunk consumed (always ends after a newline)
    long: int = 0  # container messages over the MessageLimit (split, truncated or skipped)
    long_skipped: int = 0  # bytes of the messages skipped


# Container runtimes cut messages at 16 KiB per physical line (docker's JSON escaping can
# make one ~100 KiB); such lines are read whole so that the limit applies to the message.
CONTAINER_LINE_BYTES = 256 * 1024


def line_cap(fmt: str, max_line_bytes: int) -> int:
    """The longest physical line read whole: ``max_line_bytes`` for plain lines; for the
    container formats at least :data:`CONTAINER_LINE_BYTES`, with ``max_line_bytes`` applied
    to the decoded message instead (:class:`MessageLimit`)."""
    return max_line_bytes if fmt == "plain" else max(max_line_bytes, CONTAINER_LINE_BYTES)


def message_limit(fmt: str, max_line_bytes: int, policy: str) -> MessageLimit | None:
    """The limit on a container format's messages; None for plain lines."""
    return None if fmt == "plain" else MessageLimit(max_line_bytes, policy)


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


# (chunk, base offset, final) -> Decoded
Decoder = Callable[[bytes, int, bool], Decoded]


def line_offsets(base: int, lines: list[bytes]) -> list[int]:
    """Start offset of each line of ``b"\\n".join(lines)`` read at ``base`` (C-level loop)."""
    if not lines:
        return []
    sizes = map(add, map(len, lines), repeat(1))
    offs = list(accumulate(sizes, initial=base))
    offs.pop()
    return offs


def decode_plain(chunk: bytes, base: int, final: bool = False) -> Decoded:
    """Complete newline-terminated lines; a trailing ``\\r`` is stripped (CRLF files)."""
    end = chunk.rfind(b"\n")
    if end < 0:
        return Decoded()
    lines = chunk[:end].split(b"\n")
    offsets = line_offsets(base, lines)
    if b"\r" in chunk:
        lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    return Decoded(lines, offsets, consumed=end + 1)


_time_cache: dict[bytes, int] = {}


def parse_rfc3339(ts: bytes) -> float:
    """``2024-05-01T12:00:00.123456789Z`` (or ``+02:00``) -> epoch seconds.

    The whole-seconds part is cached: container runtimes write many lines per second.

    Raises:
        ValueError, IndexError: not such a timestamp.
    """
    head = ts[:19]
    secs = _time_cache.get(head)
    if secs is None:
        t = head.decode()
        secs = calendar.timegm(
            (int(t[0:4]), int(t[5:7]), int(t[8:10]), int(t[11:13]), int(t[14:16]),
             int(t[17:19]), 0, 0, 0)
        )
        if len(_time_cache) > 4096:
            _time_cache.clear()
        _time_cache[head] = secs
    rest = ts[19:]
    frac = 0.0
    if rest[:1] == b".":
        i = 1
        while i < len(rest) and 48 <= rest[i] <= 57:
            i += 1
        frac = float(b"0" + rest[:i])
        rest = rest[i:]
    if rest and rest[:1] in (b"+", b"-"):
        sign = 1 if rest[:1] == b"+" else -1
        hh, mm = int(rest[1:3]), int(rest[4:6])
        secs -= sign * (hh * 3600 + mm * 60)
    return secs + frac


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


class _Joiner:
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


def _decode_cri(chunk: bytes, base: int, final: bool, rule: MultilineRule | None,
                limit: MessageLimit | None = None) -> Decoded:
    """CRI log lines ``<time> <stream> <P|F> <message>``; ``P`` partials are joined.

    A line that does not follow the format is passed through whole (as a message of
    stream ``unknown``), so nothing is dropped.
    """
    end = chunk.rfind(b"\n")
    j = _Joiner(rule, True, base, limit)
    if end < 0:
        return j.done(base, False, base)
    pos = base
    for raw in chunk[:end].split(b"\n"):
        start = pos
        pos += len(raw) + 1
        parts = raw.split(b" ", 3)
        if len(parts) < 3 or parts[2] not in (b"P", b"F"):
            j.full("unknown", raw.rstrip(b"\r"), start, 0.0, pos)
            continue
        try:
            t = parse_rfc3339(parts[0])
        except (ValueError, IndexError):
            t = 0.0
        stream = parts[1].decode("ascii", "replace")
        msg = parts[3] if len(parts) == 4 else b""
        if parts[2] == b"P":
            j.part(stream, msg, start, t, pos)
        else:
            j.full(stream, msg, start, t, pos)
    return j.done(base, final, pos)


def _decode_docker(chunk: bytes, base: int, final: bool, rule: MultilineRule | None,
                   limit: MessageLimit | None = None) -> Decoded:
    """Docker json-file lines ``{"log": "...", "stream": "...", "time": "..."}``.

    A ``log`` without a trailing newline is a partial (docker splits at 16 KiB) and is
    joined with what follows on the same stream. Lines that are not such JSON pass through.
    """
    end = chunk.rfind(b"\n")
    j = _Joiner(rule, True, base, limit)
    if end < 0:
        return j.done(base, False, base)
    pos = base
    for raw in chunk[:end].split(b"\n"):
        start = pos
        pos += len(raw) + 1
        try:
            doc = orjson.loads(raw)
            log, stream, ts = doc["log"], doc.get("stream", "stdout"), doc.get("time", "")
            if not isinstance(log, str) or not isinstance(stream, str):
                raise TypeError("log and stream must be strings")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            j.full("unknown", raw, start, 0.0, pos)
            continue
        try:
            t = parse_rfc3339(ts.encode()) if isinstance(ts, str) and ts else 0.0
        except (ValueError, IndexError):
            t = 0.0
        data = log.encode("utf-8", "surrogatepass")
        if data.endswith(b"\n"):
            j.full(stream, data[:-1], start, t, pos)
        else:
            j.part(stream, data, start, t, pos)
    return j.done(base, final, pos)


def _decode_plain_multiline(chunk: bytes, base: int, final: bool,
                            rule: MultilineRule | None, limit: MessageLimit | None = None
                            ) -> Decoded:
    end = chunk.rfind(b"\n")
    j = _Joiner(rule, False, base)
    if end < 0:
        return j.done(base, False, base)
    pos = base
    crlf = b"\r" in chunk
    for raw in chunk[:end].split(b"\n"):
        start = pos
        pos += len(raw) + 1
        j.full("", raw[:-1] if crlf and raw.endswith(b"\r") else raw, start, 0.0, pos)
    return j.done(base, final, pos)


def make_decoder(fmt: str, rule: MultilineRule | None,
                 limit: MessageLimit | None = None) -> Decoder:
    """The decoder of ``fmt`` (``plain``, ``cri``, ``docker``) with an optional multiline rule.

    Plain lines without multiline take a split-only fast path. ``limit`` applies to the
    messages of the container formats (a plain line's limit is its physical length, which
    the reader applies).
    """
    if fmt == "plain" and rule is None:
        return decode_plain
    impl = {"plain": _decode_plain_multiline, "cri": _decode_cri, "docker": _decode_docker}[fmt]

    def decode(chunk: bytes, base: int, final: bool = False) -> Decoded:
        return impl(chunk, base, final, rule, limit)

    return decode
