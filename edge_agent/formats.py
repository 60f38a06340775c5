"""Decoding a chunk of file bytes into complete logical lines: plain, CRI and docker.

Each decoder takes the bytes read at file offset ``base`` and returns the lines, their
start offsets and how many bytes were consumed. It consumes only whole physical lines, and
for container formats only whole messages: a CRI ``P`` (partial) run or a docker line
without its final newline is left unconsumed until its end arrives, so the committed
offset never falls inside a message and a restart never loses half of one.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from operator import add

import orjson

__all__ = ["Decoded", "decode_cri", "decode_docker", "decode_plain", "parse_rfc3339"]


@dataclass(slots=True)
class Decoded:
    lines: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[float] | None = None
    streams: list[str] | None = None
    consumed: int = 0  # bytes of the chunk consumed (always ends after a newline)


def line_offsets(base: int, lines: list[bytes]) -> list[int]:
    """Start offset of each line of ``b"\\n".join(lines)`` read at ``base`` (C-level loop)."""
    if not lines:
        return []
    sizes = map(add, map(len, lines), repeat(1))
    offs = list(accumulate(sizes, initial=base))
    offs.pop()
    return offs


def decode_plain(chunk: bytes, base: int) -> Decoded:
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


class _Joiner:
    """Joins partial messages per stream; releases messages only at safe points.

    A safe point is a line boundary where no stream has an open partial run: every message
    before it is complete and none straddles it, so the offset there can be committed.
    Messages completed while another stream's run is still open wait for the next one.
    """

    __slots__ = ("out", "partial", "safe", "staged")

    def __init__(self) -> None:
        self.out = Decoded(times=[], streams=[])
        self.partial: dict[str, tuple[list[bytes], int, float]] = {}
        self.staged: list[tuple[int, bytes, float, str]] = []
        self.safe = 0

    def part(self, stream: str, msg: bytes, start: int, t: float) -> None:
        run = self.partial.get(stream)
        if run is None:
            self.partial[stream] = ([msg], start, t)
        else:
            run[0].append(msg)

    def full(self, stream: str, msg: bytes, start: int, t: float, next_pos: int) -> None:
        run = self.partial.pop(stream, None)
        if run is not None:
            run[0].append(msg)
            msg, start, t = b"".join(run[0]), run[1], run[2]
        self.staged.append((start, msg, t, stream))
        if not self.partial:
            self._release(next_pos)

    def _release(self, next_pos: int) -> None:
        staged = self.staged
        if len(staged) > 1:
            staged.sort(key=lambda s: s[0])  # joined runs complete after later lines start
        out = self.out
        assert out.times is not None and out.streams is not None
        for start, msg, t, stream in staged:
            out.lines.append(msg)
            out.offsets.append(start)
            out.times.append(t)
            out.streams.append(stream)
        staged.clear()
        self.safe = next_pos

    def done(self) -> Decoded:
        self.out.consumed = self.safe
        return self.out


def decode_cri(chunk: bytes, base: int) -> Decoded:
    """CRI log lines ``<time> <stream> <P|F> <message>``; ``P`` partials are joined.

    A line that does not follow the format is passed through whole (as a message of
    stream ``unknown``), so nothing is dropped.
    """
    end = chunk.rfind(b"\n")
    j = _Joiner()
    if end < 0:
        return j.done()
    pos = 0
    for raw in chunk[:end].split(b"\n"):
        start = base + pos
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
            j.part(stream, msg, start, t)
        else:
            j.full(stream, msg, start, t, pos)
    return j.done()


def decode_docker(chunk: bytes, base: int) -> Decoded:
    """Docker json-file lines ``{"log": "...", "stream": "...", "time": "..."}``.

    A ``log`` without a trailing newline is a partial (docker splits at 16 KiB) and is
    joined with what follows on the same stream. Lines that are not such JSON pass through.
    """
    end = chunk.rfind(b"\n")
    j = _Joiner()
    if end < 0:
        return j.done()
    pos = 0
    for raw in chunk[:end].split(b"\n"):
        start = base + pos
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
            j.part(stream, data, start, t)
    return j.done()
