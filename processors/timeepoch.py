"""``%s`` (epoch seconds, optionally ``%s.%L``) compiled into a table-driven parser.

``strptime`` has no ``%s``, so unlike :mod:`processors.timefast` there is no reference
parser to fall back to: what this accepts is the rule (ASCII digits, at most 12, at most
:data:`MAX_EPOCH`; a fraction read as the other formats read it), and a test checks it
against that rule written plainly. It shares timefast's fraction table and bounded caches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from .timefast import _FRACTIONS, Parse, _store

__all__ = ["MAX_EPOCH", "compile_epoch"]

#: 9999-12-31T23:59:59Z, the last second ``datetime`` (and so every output) can show.
MAX_EPOCH = 253402300799


@functools.cache
def _last_four() -> dict[str, float]:
    """"0000" ... "9999" -> their value (built on first use: ~0.9 MB, once a process); floats,
    as the heads: CPython specialises float + float, not float + int."""
    return {f"{i:04d}": float(i) for i in range(10000)}


def compile_epoch(fmt: str, error: Callable[[str], Exception]) -> Parse | None:
    """``%s`` (epoch seconds) or ``%s.%L`` / ``%s,%L``; None for formats without ``%s``.

    Epoch seconds are ASCII digits, at most 12 and at most :data:`MAX_EPOCH`. The text but
    its last four digits (which changes every 10,000 s) is kept with its value, the last
    four are a table: two lookups a line, three with a fraction of 3 digits. Other
    fractions are read as :class:`~processors.timefmt.StrptimeFormat` adds them.

    Raises:
        ValueError: ``%s`` together with anything else.
    """
    if "%s" not in fmt:
        return None
    if fmt != "%s" and fmt not in ("%s.%L", "%s,%L", "%s.%f", "%s,%f"):
        raise ValueError(f"time format {fmt!r}: %s (epoch seconds) must be the whole format, "
                         "or %s.%L with a fraction")
    low: dict[str, float] = {}  # the table of the last four, from the first text on
    #: the digits but the last four -> their value in seconds, times 10,000.
    heads: dict[str, float] = {}

    def seconds(whole: str) -> int | None:
        nonlocal low
        low = low or _last_four()
        if not (whole.isdigit() and whole.isascii() and len(whole) <= 12):
            return None
        secs = int(whole)
        if secs > MAX_EPOCH:
            return None
        head = whole[:-4]
        if head and (int(head) + 1) * 10000 - 1 <= MAX_EPOCH:  # every head + "dddd" valid
            _store(heads, head, float(int(head) * 10000))
        return secs

    if fmt == "%s":
        def learn(text: str) -> float:
            secs = seconds(text)
            if secs is None:
                raise error(text)
            return float(secs)

        # heads and the slices are default arguments (local loads; heads is only changed
        # in place); low is set at the first text.
        def parse_epoch(text: str, heads: dict[str, float] = heads,
                        kh: slice = slice(None, -4), kl: slice = slice(-4, None)) -> float:
            try:
                return heads[text[kh]] + low[text[kl]]
            except KeyError:
                return learn(text)
        return parse_epoch

    sep = fmt[2]
    fractions = _FRACTIONS
    #: the separator and 3 digits -> that fraction.
    millis = {sep + k: f for k, f in fractions.items() if len(k) == 3}

    def learn_frac(text: str) -> float:
        whole, found, digits = text.partition(sep)
        secs = seconds(whole) if found and digits.isdigit() and digits.isascii() else None
        if secs is None:
            raise error(text)
        f = fractions.get(digits)
        return secs + (f if f is not None else float("0." + digits))

    def parse_epoch_frac(text: str, heads: dict[str, float] = heads,
                         millis: dict[str, float] = millis, kh: slice = slice(None, -8),
                         kl: slice = slice(-8, -4), km: slice = slice(-4, None)) -> float:
        try:
            return (heads[text[kh]] + low[text[kl]]) + millis[text[km]]
        except KeyError:
            return learn_frac(text)
    return parse_epoch_frac
