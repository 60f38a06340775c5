"""Decoding file bytes into complete logical messages: plain, CRI and docker, + multiline.

A decoder takes a chunk of whole physical lines read at file offset ``base`` and returns
the messages, their start offsets and how many bytes were consumed. It consumes only up to
a *safe point*: a line boundary before which every message is complete and after which
none has started. A CRI ``P`` (partial) run, a docker line without its final newline, or a
multiline message that may still grow is left unconsumed until its end arrives, so the
committed offset never falls inside a message and a restart never loses half of one.
Each decoder parses its format's lines here; joining them into messages and finding the
safe point is :class:`~edge_agent.joiner.Joiner`'s.

With ``final=True`` (the message waited longer than its flush timeout, grew past its size
bound, or the agent is stopping) every open run and message is closed and the whole chunk
is consumed.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from itertools import accumulate, repeat
from operator import add

import orjson

from .joiner import Decoded, Joiner, MessageLimit
from .multiline import MultilineRule

__all__ = [
    "Decoder",
    "line_cap",
    "decode_plain",
    "line_offsets",
    "make_decoder",
    "message_limit",
    "parse_rfc3339",
]


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
_STREAMS = {b"stdout": "stdout", b"stderr": "stderr"}  # decoded once, not per line


def _seconds(head: bytes) -> int:
    """``2024-05-01T12:00:00`` -> epoch seconds, cached (runtimes write many lines a second).

    Raises:
        ValueError, IndexError: not such a time.
    """
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
    return secs


def parse_rfc3339(ts: bytes) -> float:
    """``2024-05-01T12:00:00.123456789Z`` (or ``+02:00``) -> epoch seconds.

    The whole-seconds part is cached: container runtimes write many lines per second.

    Raises:
        ValueError, IndexError: not such a timestamp.
    """
    secs = _seconds(ts[:19])
    rest = ts[19:]
    # The runtimes' own shape (RFC3339Nano: a fraction, then Z) in one float(): the digit
    # loop below costs ~0.5 µs for nine digits; same string, same float.
    if rest[-1:] == b"Z" and rest[:1] == b"." and rest[1:-1].isdigit():
        return secs + float(b"0" + rest[:-1])
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


#: The runtimes' own line (RFC3339Nano in UTC, stdout or stderr, a whole message): nearly
#: every line of a container log. The groups are what parse_rfc3339 reads of the time.
_CRI_FULL = re.compile(
    rb"(?m)^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z (stdout|stderr) F ([^\n]*)\n")


def _cri_whole(chunk: bytes, end: int, base: int, limit: MessageLimit | None
               ) -> Decoded | None:
    """The chunk decoded at C speed when every line is such a whole message (None when
    not: a partial, another shape, a message over the limit; the line loop then runs).

    Same messages, offsets, times and streams as the loop: one regex pass over the chunk
    and a few maps, instead of a split, a time parse and a Joiner call per line."""
    body = chunk[: end + 1]
    found = _CRI_FULL.findall(body)
    lines = body[:-1].split(b"\n")  # memchr-fast; bytes.count walks byte by byte
    if not found or len(found) != len(lines):
        return None
    heads, fracs, names, msgs = map(list, zip(*found, strict=True))
    if limit is not None and max(map(len, msgs)) > limit.max_bytes:
        return None
    try:
        secs = {head: _seconds(head) for head in set(heads)}
    except (ValueError, IndexError, OverflowError):
        return None  # a time the loop reads as 0.0
    if b"" in fracs:  # a whole second: Go's RFC3339Nano drops a zero fraction
        fracs = [f or b".0" for f in fracs]
    times = list(map(add, map(secs.__getitem__, heads), map(float, fracs)))
    return Decoded(msgs, line_offsets(base, lines), times,
                   list(map(_STREAMS.__getitem__, names)), end + 1)


def _decode_cri(chunk: bytes, base: int, final: bool, rule: MultilineRule | None,
                limit: MessageLimit | None = None) -> Decoded:
    """CRI log lines ``<time> <stream> <P|F> <message>``; ``P`` partials are joined.

    A line that does not follow the format is passed through whole (as a message of
    stream ``unknown``), so nothing is dropped.
    """
    end = chunk.rfind(b"\n")
    if end >= 0 and rule is None:
        whole = _cri_whole(chunk, end, base, limit)
        if whole is not None:
            return whole
    return _decode_cri_lines(chunk, end, base, final, rule, limit)


def _decode_cri_lines(chunk: bytes, end: int, base: int, final: bool,
                      rule: MultilineRule | None, limit: MessageLimit | None) -> Decoded:
    """:func:`_decode_cri` line by line, through the Joiner (``end``: the last newline)."""
    j = Joiner(rule, True, base, limit)
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
        stream = _STREAMS.get(parts[1]) or parts[1].decode("ascii", "replace")
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
    j = Joiner(rule, True, base, limit)
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
    j = Joiner(rule, False, base)
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
