"""Time formats compiled into fixed-position parsers, so no line pays for ``strptime``.

The formats people write (nginx/apache ``%d/%b/%Y:%H:%M:%S %z``, ISO 8601 / RFC 3339 with
fractions and zones, syslog ``%b %d %H:%M:%S``) put every field at a fixed offset. Such a
format compiles into a closure that slices the text and looks each part up in small tables:

- the text up to the minutes (date and hour) in a cache of hour starts (epoch seconds),
  filled once per hour of log by a strict check of every field and ``date.toordinal``;
- ``MM:SS`` (with the literals around it) in a table of the 3,600 valid values;
- the zone in a table of offsets checked by the rules ``strptime`` applies (``%z``) or the
  trailing-zone rule of :class:`~processors.timefmt.StrptimeFormat`;
- 1-3 fraction digits in a table; more are converted as the reference does.

The compiled parser only ever *accepts*: text that is not in the canonical shape (a single
digit day, two spaces, a Unicode digit, a rejected value such as day 32 or hour 24) goes to
the reference ``strptime`` parser, so results and rejections are exactly the reference's.
``%s`` (epoch seconds, optionally ``%s.%L``) has no ``strptime`` equivalent and is parsed
here only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, timezone

__all__ = ["MAX_EPOCH", "compile_epoch", "compile_fast"]

Parse = Callable[[str], float]

_WIDTH = {"Y": 4, "m": 2, "b": 3, "d": 2, "H": 2, "M": 2, "S": 2}
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_CACHE_MAX = 4096
_ZONE_CACHE_MAX = 256
#: 9999-12-31T23:59:59Z, the last second ``datetime`` (and so every output) can show.
MAX_EPOCH = 253402300799
# The reference's rule for a zone after the text, and for formats that already end in one.
_TRAILING_ZONE = re.compile(r"\s*(Z|[+-]\d{2}:?\d{2})\s*$")
_FRACTIONS: dict[str, float] = {
    f"{i:0{n}d}": float(f"0.{i:0{n}d}") for n in (1, 2, 3) for i in range(10 ** n)}


def _tokens(fmt: str) -> list[str] | None:
    """``["%Y", "-", "%m", ...]``; None for a lone ``%`` at the end."""
    out: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%":
            if i + 1 == len(fmt):
                return None
            d = fmt[i + 1]
            out.append("%" if d == "%" else "%" + d)
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return out


def _zone(z: str, strict: bool) -> int | None:
    """Seconds east of UTC of ``Z``/``+HHMM``/``+HH:MM``; None for anything else (the
    reference decides). ``strict``: as ``strptime``'s ``%z`` (minutes 00-59, under 24
    hours); else as the reference's ``parse_offset`` for a zone after the text (any two
    digits)."""
    if z == "Z":
        return 0
    if not z.isascii() or z[:1] not in ("+", "-"):
        return None
    if len(z) == 6 and z[3] == ":":
        hh, mm = z[1:3], z[4:6]
    elif len(z) == 5:
        hh, mm = z[1:3], z[3:5]
    else:
        return None
    if not (hh.isdigit() and mm.isdigit()) or strict and (int(hh) > 23 or int(mm) > 59):
        return None
    secs = int(hh) * 3600 + int(mm) * 60
    return -secs if z[0] == "-" else secs


def _strptime_zone(z: str) -> int | None:
    return _zone(z, True)


def _trailing_zone(z: str) -> int | None:
    return _zone(z, False)


class _Layout:
    """Where each field of a fixed-width format sits (see :func:`_layout`)."""

    __slots__ = ("frac", "k_fixed", "k_min", "literals", "mid", "mmss_lit", "pos", "zone")

    def __init__(self) -> None:
        self.pos: dict[str, int] = {}  # directive letter -> offset
        self.literals: list[tuple[int, str]] = []  # literal characters before the minutes
        self.mmss_lit = ("", "")  # literals between %M and %S, and after %S
        self.k_min = 0  # offset of %M: the hour key is text[:k_min]
        self.k_fixed = 0  # end of "MM:SS" and the literals after it
        self.frac = False
        self.mid = ""  # literals between the fraction and the zone (or the end)
        self.zone = False


def _layout(tokens: list[str]) -> _Layout | None:
    """The layout of a covered format; None if the compiled parser does not cover it."""
    lay = _Layout()
    at = 0
    i = 0
    order: list[str] = []
    lit_at: dict[int, str] = {}
    while i < len(tokens) and tokens[i] not in ("%L", "%f", "%z"):
        tok = tokens[i]
        i += 1
        if len(tok) == 2 and tok[0] == "%":
            d = tok[1]
            if d not in _WIDTH or d in lay.pos:
                return None
            lay.pos[d] = at
            order.append(d)
            at += _WIDTH[d]
        else:
            lit_at[at] = tok
            at += 1
    if (not {"d", "H", "M", "S"} <= lay.pos.keys() or ("m" in lay.pos) == ("b" in lay.pos)
            or order[-2:] != ["M", "S"]):  # minutes then seconds, last: one "MM:SS" table
        return None
    m_at, s_at = lay.pos["M"], lay.pos["S"]
    lay.k_min, lay.k_fixed = m_at, at
    lay.literals = [(p, c) for p, c in sorted(lit_at.items()) if p < m_at]
    lay.mmss_lit = ("".join(lit_at[p] for p in range(m_at + 2, s_at)),
                    "".join(lit_at[p] for p in range(s_at + 2, at)))
    rest = tokens[i:]
    if rest[:1] and rest[0] in ("%L", "%f"):
        lay.frac = True
        rest = rest[1:]
        while rest and not (len(rest[0]) == 2 and rest[0][0] == "%"):
            lay.mid += rest[0]
            rest = rest[1:]
    if rest == ["%z"]:
        lay.zone = True
    elif rest:
        return None
    return lay


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
    tokens = _tokens(fmt)
    lay = _layout(tokens) if tokens is not None else None
    if tokens is None or lay is None:
        return None
    read_zone: Callable[[str], int | None]
    if lay.zone:
        read_zone = _strptime_zone
    else:
        pyfmt = "".join(t for t in tokens if t not in ("%L", "%f"))
        tail = "".join(lay.mmss_lit) + lay.mid
        if _TRAILING_ZONE.search(pyfmt) or "+" in tail or "-" in tail:
            read_zone = _no_zone  # the reference takes no zone after such a format
        else:
            read_zone = _trailing_zone
    #: zone text -> seconds to add (minus the offset east of UTC); "" is the default zone.
    zones: dict[str, int] = {} if lay.zone else {"": -offset}
    hours: dict[str, int] = {}
    #: text up to the seconds -> epoch seconds of that minute, a float so that adding the
    #: seconds and zone (ints) gives the reference's float(int) exactly.
    minutes: dict[str, float] = {}
    m_lit, s_lit = lay.mmss_lit
    k_min, k_fixed, frac, mid = lay.k_min, lay.k_fixed, lay.frac, lay.mid
    k_sec = lay.pos["S"]
    n_mid = len(mid)
    secs = {f"{s:02d}{s_lit}": s for s in range(60)}  # "SS" and what follows it
    hour_start = _hour_parser(lay)
    fractions = _FRACTIONS
    #: no fraction: everything after the minutes -> seconds plus zone (to add).
    tails: dict[str, int] = {}
    #: with a fraction: what follows "SS." -> (zone to add, fraction), for 1-3 digits.
    rests: dict[str, tuple[int, float]] = {}

    in_hour = {f"{m:02d}{m_lit}": m * 60 for m in range(60)}  # "MM:" -> seconds

    def minute(text: str) -> float | None:
        """The start of ``text``'s minute (cached); None if its date or hour is not in the
        canonical, valid form. Runs once per minute of log."""
        key = text[:k_sec]
        hour_key = key[:k_min]
        hour = hours.get(hour_key)
        if hour is None:
            hour = hour_start(hour_key)
            if hour is None:
                return None
            if len(hours) >= _CACHE_MAX:
                hours.clear()
            hours[hour_key] = hour
        mm = in_hour.get(key[k_min:])
        if mm is None:
            return None
        if len(minutes) >= _CACHE_MAX:
            minutes.clear()
        start = minutes[key] = float(hour + mm)
        return start

    def zone(z: str) -> int | None:
        """What to add for zone text ``z`` (cached), or None if the reference decides."""
        add = zones.get(z)
        if add is None:
            off = read_zone(z)
            if off is None:
                return None
            if len(zones) >= _ZONE_CACHE_MAX:
                zones.clear()
                if not lay.zone:
                    zones[""] = -offset
            add = zones[z] = -off
        return add

    if not frac:
        n_sec = 2 + len(s_lit)

        def learn_tail(text: str) -> int | None:
            tail = text[k_sec:]
            s = secs.get(tail[:n_sec])
            add = zone(tail[n_sec:]) if s is not None else None
            if s is None or add is None:
                return None
            if len(tails) >= _CACHE_MAX:
                tails.clear()
            t = tails[tail] = s + add
            return t

        def parse(text: str) -> float:
            h = minutes.get(text[:k_sec])
            if h is None:
                h = minute(text)
                if h is None:
                    return reference(text)
            t = tails.get(text[k_sec:])
            if t is None:
                t = learn_tail(text)
                if t is None:
                    return reference(text)
            return h + t

        return parse

    may_zone = read_zone is not _no_zone

    def finish(text: str, h: float, s: int) -> float:
        """The fraction and zone after ``SS.`` (a long fraction or a new zone)."""
        e = n = len(text)
        if may_zone:  # where a zone would start: only a guess, the zone table checks it
            if text[-1] == "Z":
                e = n - 1
            elif text[-3] == ":" and text[-6] in "+-":
                e = n - 6
            elif text[-5] in "+-":
                e = n - 5
        z = text[e:]
        add = zones.get(z)
        if add is None:
            add = zone(z)
            if add is None:
                return reference(text)
        if n_mid:
            if text[e - n_mid:e] != mid:
                return reference(text)
            e -= n_mid
        digits = text[k_fixed:e]
        f = fractions.get(digits) if e - k_fixed <= 3 else None
        if f is not None:
            if len(rests) >= _CACHE_MAX:
                rests.clear()
            rests[text[k_fixed:]] = (add, f)
        elif digits.isdecimal():  # what the reference's \d+ takes
            f = float("0." + digits)
        else:
            return reference(text)
        return (h + s + add) + f

    # What follows "SS." in a text the rests cache can hold: 1-3 digits, the literals, a zone.
    rest_max = k_fixed + 3 + n_mid + 6

    def parse_frac(text: str) -> float:
        h = minutes.get(text[:k_sec])
        if h is None:
            h = minute(text)
            if h is None:
                return reference(text)
        s = secs.get(text[k_sec:k_fixed])
        if s is None:
            return reference(text)
        if len(text) <= rest_max:
            r = rests.get(text[k_fixed:])
            if r is not None:
                add, f = r
                return (h + s + add) + f
        return finish(text, h, s)

    return parse_frac


def _no_zone(z: str) -> int | None:
    return None


def _hour_parser(lay: _Layout) -> Callable[[str], int | None]:
    """``text[:k_min]`` -> epoch seconds of that hour (UTC, before any zone), or None if
    a field is not in its canonical, valid form."""
    pos, literals, k_min = lay.pos, lay.literals, lay.k_min
    py, pm, pb, pd, ph = pos.get("Y"), pos.get("m"), pos.get("b"), pos["d"], pos["H"]

    def hour_start(key: str) -> int | None:
        if len(key) != k_min or not key.isascii():
            return None
        for p, c in literals:
            if key[p] != c:
                return None
        if py is not None:
            ys = key[py:py + 4]
            if not ys.isdigit():
                return None
            year = int(ys)
        else:
            year = 0  # below
        if pm is not None:
            ms = key[pm:pm + 2]
            if not ms.isdigit():
                return None
            month = int(ms)
        else:
            assert pb is not None
            month = _MONTHS.get(key[pb:pb + 3].lower(), 0)
        ds = key[pd:pd + 2]
        if ds.isdigit():
            day = int(ds)
        elif ds[0] == " " and ds[1] in "123456789":
            day = int(ds[1])
        else:
            return None
        hs = key[ph:ph + 2]
        if not hs.isdigit() or int(hs) > 23:
            return None
        try:
            if py is None:
                # As the reference: strptime checks the day against 1900 (so no Feb 29),
                # then the current year replaces it.
                date(1900, month, day)
                year = datetime.now(timezone.utc).year
            days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            return None  # day 32, month 13, year 0, Feb 29 of 2023: the reference rejects
        return days * 86400 + int(hs) * 3600

    return hour_start


def compile_epoch(fmt: str, error: Callable[[str], Exception]) -> Parse | None:
    """``%s`` (epoch seconds) or ``%s.%L`` / ``%s,%L``; None for formats without ``%s``.

    Raises:
        ValueError: ``%s`` together with anything else.
    """
    if "%s" not in fmt:
        return None
    if fmt == "%s":
        def parse_epoch(text: str) -> float:
            if text.isdigit() and text.isascii() and len(text) <= 12:
                secs = int(text)
                if secs <= MAX_EPOCH:
                    return float(secs)
            raise error(text)
        return parse_epoch
    if fmt in ("%s.%L", "%s,%L", "%s.%f", "%s,%f"):
        sep = fmt[2]
        fractions = _FRACTIONS

        def parse_epoch_frac(text: str) -> float:
            whole, found, digits = text.partition(sep)
            if (found and whole.isdigit() and whole.isascii() and len(whole) <= 12
                    and digits.isdigit() and digits.isascii()):
                secs = int(whole)
                if secs <= MAX_EPOCH:
                    f = fractions.get(digits)
                    return secs + (f if f is not None else float("0." + digits))
            raise error(text)
        return parse_epoch_frac
    raise ValueError(f"time format {fmt!r}: %s (epoch seconds) must be the whole format, "
                     "or %s.%L with a fraction")
