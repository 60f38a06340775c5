"""Time formats compiled into fixed-position parsers, so no line pays for ``strptime``.

The formats people write (nginx/apache ``%d/%b/%Y:%H:%M:%S %z``, ISO 8601 / RFC 3339 with
fractions and zones, syslog ``%b %d %H:%M:%S``) put every field at a fixed offset. Such a
format compiles into a closure that slices the text and looks each part up in tables
(subscripts in a ``try``: cheaper than ``.get`` calls, and a miss is rare):

- the text up to the minutes (date and hour) in a cache of hour starts (epoch seconds),
  filled once per hour of log by a strict check of every field and ``date.toordinal``
  (:mod:`processors.timelayout`; the day's start is cached apart, so a new hour of a day
  already read checks only the hour);
- whole seconds: the rest (``MM:SS`` and the zone) in a table of seconds plus zone, filled
  for all 3,600 ``MM:SS`` when a zone is first seen;
- fractions: ``MM:SS.`` in a table of 3,600, then 1-3 digits with the zone in a table of
  1,110 per zone (filled when the zone is first seen) that holds zone plus fraction,
  added and rounded once (the same float as the reference's one rounding from 2004 on,
  see ``_QUICK_FROM``; earlier hours add the fraction last); longer fractions are read by
  ``float(".digits")`` after a ".", else as an int over ``10**n`` (both exactly the
  reference's ``float("0." + digits)``), the zone in a table; where the fraction ends is
  taken from the line before and checked;
- every table holds floats (CPython specialises float + float, not float + int), and the
  fast paths take their tables and slices as default arguments (local loads);
- a zone is checked by the rules ``strptime`` applies (``%z``) or the trailing-zone rule of
  :class:`~processors.timefmt.StrptimeFormat`.

The compiled parser only ever *accepts*: text that is not in the canonical shape (a single
digit day, two spaces, a Unicode digit outside a long fraction, a rejected value such as day
32 or hour 24) goes to the reference ``strptime`` parser, so results and rejections are
exactly the reference's.
``%s`` (epoch seconds) has no ``strptime`` equivalent: :mod:`processors.timeepoch` parses it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar

from .timelayout import hour_parser, layout, tokens, zone_offset

__all__ = ["compile_fast"]

Parse = Callable[[str], float]

_CACHE_MAX = 4096
_ZONE_CACHE_MAX = 256
_RESTS_MAX = 8 * 1110  # 1-3 fraction digits for 8 zones: ~1 MB at the most
_TAILS_MAX = 8 * 3600  # "MM:SS" for 8 zones: ~3 MB at the most
# The reference's rule for a zone after the text, and for formats that already end in one.
_TRAILING_ZONE = re.compile(r"\s*(Z|[+-]\d{2}:?\d{2})\s*$")
_FRACTIONS: dict[str, float] = {
    f"{i:0{n}d}": float(f"0.{i:0{n}d}") for n in (1, 2, 3) for i in range(10 ** n)}
#: 10**n for the fractions whose digits are an exact int (n <= 15 < log10(2**53)).
_POWERS = tuple(10.0 ** n for n in range(16))
#: The quick path (1-3 digit fractions) adds the zone and the fraction first, rounded once
#: in a table, then the hour and "MM:SS": two roundings where the reference has one. The
#: result is the same float, bit for bit, once the hour starts at 2**30 (2004-01-10) or
#: later and the zone is under 2**19 s: the first sum's error (<= 2**-34) is then far below
#: the distance (>= 2**-31) between the exact time and any halfway point of the result's
#: rounding, so both round to the same float (and the exact time is never a halfway point:
#: that would need m / 10**n with a power of two over 2**14 as denominator). Earlier
#: hours take the exact path (the fraction added last).
_QUICK_FROM = float(2 ** 30)
_QUICK_ADD_MAX = float(2 ** 19)
#: A slice end beyond any text: ``text[k:_BEYOND]`` is the rest, ``text[_BEYOND:]`` is "".
_BEYOND = 1 << 30
_V = TypeVar("_V")


def _store(cache: dict[str, _V], key: str, value: _V, cap: int = _CACHE_MAX) -> None:
    if len(cache) >= cap:
        cache.clear()  # a bound on memory: the next lines fill it again
    cache[key] = value


def _memo(cache: dict[str, _V], key: str, compute: Callable[[str], _V | None],
          cap: int = _CACHE_MAX) -> _V | None:
    """``compute(key)``, kept in ``cache`` unless it is None: the one way every table
    below learns a value it has not seen."""
    value = compute(key)
    if value is not None:
        _store(cache, key, value, cap)
    return value


def compile_fast(fmt: str, offset: int, reference: Parse) -> Parse | None:
    """A parser for ``fmt`` that slices instead of calling ``strptime``; None when the
    format is not covered (the caller then uses ``reference`` alone).

    Args:
        fmt: strftime format, ``%L``/``%f`` = fraction of any length.
        offset: seconds east of UTC for times without a zone.
        reference: the strptime-based parser; gets every text the fast path does not take.
    """
    if fmt != fmt.strip():
        return None  # the reference strips text and format: leave that to it
    toks = tokens(fmt)
    lay = layout(toks) if toks is not None else None
    if toks is None or lay is None or any(c.isdigit() for c in lay.mid):
        return None
    strict = lay.zone  # %z: strptime's rule; else the reference's rule for a zone after
    no_zone = False
    if not strict:
        pyfmt = "".join(t for t in toks if t not in ("%L", "%f"))
        tail = "".join(lay.mmss_lit) + lay.mid
        no_zone = bool(_TRAILING_ZONE.search(pyfmt)) or "+" in tail or "-" in tail
    m_lit, s_lit = lay.mmss_lit
    k_min, k_fixed, mid = lay.k_min, lay.k_fixed, lay.mid
    hour_start = hour_parser(lay)
    #: text up to the minutes (date and hour) -> epoch seconds of that hour (UTC, before
    #: any zone), a float so that adding the rest (ints) gives the reference's float(int)
    #: exactly. A new hour is the only thing the fast path learns from the date.
    hours: dict[str, float] = {}

    def hour_float(key: str) -> float | None:
        hour = hour_start(key)
        return None if hour is None else float(hour)

    def hour_of(key: str) -> float | None:
        h = hours.get(key)
        return h if h is not None else _memo(hours, key, hour_float)

    #: "MM:SS" and the literal after it -> seconds into the hour: empty until the first
    #: text is read (a parser may be built and never read). Every table holds floats:
    #: CPython specialises float + float, not float + int.
    in_hour: dict[str, float] = {}
    n_mmss = k_fixed - k_min

    def zone_add(z: str) -> float | None:
        """What to add for the zone text ``z`` (minus its offset east of UTC); None if the
        reference decides."""
        if z == "" and not strict:
            return float(-offset)
        off = None if not strict and no_zone else zone_offset(z, strict)
        return None if off is None else float(-off)

    if not lay.frac:
        #: everything after the hour ("MM:SS" and the zone) -> seconds plus zone, to add;
        #: filled for all 3,600 when a zone is first seen.
        tails: dict[str, float] = {}

        def learn(text: str) -> float:
            nonlocal in_hour
            in_hour = in_hour or _in_hour(m_lit, s_lit)
            h = hour_of(text[:k_min])
            tail = text[k_min:]
            t = tails.get(tail)
            if t is None:
                mmss = in_hour.get(tail[:n_mmss])
                add = zone_add(tail[n_mmss:]) if mmss is not None else None
                if mmss is None or add is None:
                    return reference(text)
                if len(tails) > _TAILS_MAX:
                    tails.clear()
                z = tail[n_mmss:]
                tails.update((k + z, v + add) for k, v in in_hour.items())
                t = mmss + add
            return reference(text) if h is None else h + t

        # Tables and slices are default arguments: local loads, the cheapest (the tables
        # are only ever changed in place).
        def parse(text: str, hours: dict[str, float] = hours, tails: dict[str, float] = tails,
                  kh: slice = slice(None, k_min), kt: slice = slice(k_min, None)) -> float:
            try:
                return hours[text[kh]] + tails[text[kt]]
            except KeyError:
                return learn(text)

        return parse

    n_mid = len(mid)

    def end_add(end: str) -> float | None:
        """The literals after the fraction and the zone -> the zone's part to add."""
        return zone_add(end[n_mid:]) if end[:n_mid] == mid else None

    #: what follows the fraction (literals and zone) -> zone to add.
    ends: dict[str, float] = {}
    #: what follows "SS." when the fraction has 1-3 digits -> (zone to add, fraction),
    #: filled for all 1,110 fractions when a zone is first seen.
    rests: dict[str, tuple[float, float]] = {}
    #: the same, added and rounded once (see _QUICK_FROM), for the hours in quick_hours:
    #: one add less a line.
    quick_rests: dict[str, float] = {}
    quick_hours: dict[str, float] = {}
    # The shape of the last line the slow path read, for the fast path to try first:
    # `short`: a 1-3 digit fraction (the quick tables, else rests); else where the fraction
    # ends, counted from the end of the text (_BEYOND: at the end, no zone), as the slices
    # of the digits, of what follows them, and of the digits with the "." before them.
    short = True
    k_dot = k_fixed - 1
    at_digits, at_end, at_dot = slice(k_fixed, _BEYOND), slice(_BEYOND, None), slice(k_dot, _BEYOND)
    powers = _POWERS

    def learn_frac(text: str) -> float:
        """A text the fast path did not take: a new minute, zone or shape, or one the
        reference has to read."""
        nonlocal short, at_digits, at_end, at_dot, in_hour
        in_hour = in_hour or _in_hour(m_lit, s_lit)
        key = text[:k_min]
        h = hour_of(key)
        s = in_hour.get(text[k_min:k_fixed])
        if h is None or s is None:
            return reference(text)
        if h >= _QUICK_FROM and key not in quick_hours:
            _store(quick_hours, key, h)
        tail = text[k_fixed:]
        n = 0
        while n < len(tail) and tail[n].isdecimal():  # what the reference's \d+ takes
            n += 1
        digits, end = tail[:n], tail[n:]
        add = ends.get(end)
        if add is None:
            add = _memo(ends, end, end_add, _ZONE_CACHE_MAX)
            if add is not None:  # every 1-3 digit fraction before it, at once
                if len(rests) > _RESTS_MAX:
                    rests.clear()
                    quick_rests.clear()
                rests.update((k + end, (add, frac)) for k, frac in _FRACTIONS.items())
                if abs(add) < _QUICK_ADD_MAX:
                    quick_rests.update((k + end, add + frac) for k, frac in _FRACTIONS.items())
        if add is None or not n:
            return reference(text)
        # int / 10**n is float("0." + digits), the reference's fraction, exactly: both
        # are the correctly rounded value of the same number (exact below 2**53).
        f = int(digits) / powers[n] if n < len(powers) else float("0." + digits)
        short = n <= 3 and digits.isascii()
        zend = -len(end) if end else _BEYOND
        at_digits, at_end, at_dot = slice(k_fixed, zend), slice(zend, None), slice(k_dot, zend)
        return (h + s + add) + f

    def exact_frac(text: str) -> float:
        """1-3 digits, the fraction added last: any hour (and zone). Reached on a miss of
        the quick path (a new hour, zone or shape, or an hour before 2004): ``.get``
        rather than a second KeyError."""
        rest = rests.get(text[k_fixed:])
        h = hours.get(text[:k_min])
        s = in_hour.get(text[k_min:k_fixed])
        if rest is None or h is None or s is None:
            return learn_frac(text)
        return (h + s + rest[0]) + rest[1]

    # A "." before the fraction (checked by in_hour): float(".digits") is the reference's
    # float("0." + digits) in one call; after another separator, int / 10**n.
    dot = s_lit.endswith(".")

    def parse_frac(text: str, quick_hours: dict[str, float] = quick_hours,
                   quick_rests: dict[str, float] = quick_rests, kh: slice = slice(None, k_min),
                   km: slice = slice(k_min, k_fixed), kr: slice = slice(k_fixed, None)) -> float:
        if short:
            try:
                return quick_hours[text[kh]] + in_hour[text[km]] + quick_rests[text[kr]]
            except KeyError:
                return exact_frac(text)
        try:
            digits = text[at_digits]
            if digits.isdecimal():
                return ((hours[text[kh]] + in_hour[text[km]] + ends[text[at_end]])
                        + (float(text[at_dot]) if dot
                           else int(digits) / powers[len(digits)]))
        except (KeyError, IndexError):
            pass
        return learn_frac(text)

    return parse_frac


@functools.cache
def _in_hour(m_lit: str, s_lit: str) -> dict[str, float]:
    """"MM:SS" with the literals between and after them -> seconds into the hour (3,600
    entries, ~0.3 MB, built on first use and shared by the formats with these literals)."""
    return {f"{m:02d}{m_lit}{s:02d}{s_lit}": float(m * 60 + s)
            for m in range(60) for s in range(60)}
