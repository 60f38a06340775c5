"""Where each field of a fixed-width time format sits, and the start of an hour of it.

:mod:`processors.timefast` compiles the formats people write into slicing parsers; this
module reads such a format (:func:`tokens`, :func:`layout`), checks a zone as ``strptime``
does (:func:`zone_offset`), and turns the text up to the minutes into the start of that
hour (:func:`hour_parser`): a strict check of every field, so that the compiled parser
accepts only what the reference ``strptime`` parser accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone

__all__ = ["Layout", "hour_parser", "layout", "tokens", "zone_offset"]

_WIDTH = {"Y": 4, "m": 2, "b": 3, "d": 2, "H": 2, "M": 2, "S": 2}
_MONTHS = {name: i for i, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_DAYS_MAX = 4096


def tokens(fmt: str) -> list[str] | None:
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


def zone_offset(z: str, strict: bool) -> int | None:
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


class Layout:
    """Where each field of a fixed-width format sits (see :func:`layout`)."""

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


def layout(tokens: list[str]) -> Layout | None:
    """The layout of a covered format; None if the compiled parser does not cover it."""
    lay = Layout()
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


def hour_parser(lay: Layout) -> Callable[[str], int | None]:
    """``text[:k_min]`` -> epoch seconds of that hour (UTC, before any zone), or None if
    a field is not in its canonical, valid form."""
    pos, literals, k_min = lay.pos, lay.literals, lay.k_min
    py, pm, pb, pd, ph = pos.get("Y"), pos.get("m"), pos.get("b"), pos["d"], pos["H"]
    #: the key without its hour digits -> that day's start: a new hour of a day already
    #: seen costs a slice, a lookup and the hour's check (~2 us less). Not for a year-less
    #: format, whose year is the current one when an hour is first read.
    days: dict[str, int] = {}

    def hour_start(key: str) -> int | None:
        if len(key) != k_min:
            return None
        hs = key[ph:ph + 2]
        if not (hs.isdigit() and hs.isascii()) or int(hs) > 23:
            return None
        if py is None:
            start = day_start(key)
        else:
            dkey = key[:ph] + key[ph + 2:]
            start = days.get(dkey)
            if start is None:
                start = day_start(key)
                if start is not None:
                    if len(days) >= _DAYS_MAX:
                        days.clear()
                    days[dkey] = start
        return None if start is None else start + int(hs) * 3600

    def day_start(key: str) -> int | None:
        """The day of ``key`` (of length ``k_min``, a valid hour) in epoch seconds."""
        if not key.isascii():
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
        try:
            if py is None:
                # As the reference: strptime checks the day against 1900 (so no Feb 29),
                # then the current year replaces it.
                date(1900, month, day)
                year = datetime.now(timezone.utc).year
            ordinal = date(year, month, day).toordinal() - _EPOCH_ORDINAL
        except ValueError:
            return None  # day 32, month 13, year 0, Feb 29 of 2023: the reference rejects
        return ordinal * 86400

    return hour_start
