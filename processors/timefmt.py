"""Time formats (strftime), compiled once: :class:`TimeFormat`.

Fluent Bit's ``%L`` (fraction, any number of digits) works, as do ``%f``, ``%z`` (``Z``,
``+0200``, ``+02:00``), a zone after the formatted text, and ``%s`` (epoch seconds, alone
or as ``%s.%L``: :mod:`processors.timeepoch`). The formats people write (every field at a
fixed offset: nginx, ISO 8601, syslog) compile into a slicing parser
(:mod:`processors.timefast`, well under a microsecond even when every line has a new time);
every other format, and every text that parser does not take, goes to
:class:`StrptimeFormat`: ``strptime`` cached per distinct second, the reference the fast
parser is tested against.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import datetime, timezone

from .timeepoch import compile_epoch
from .timefast import compile_fast

__all__ = ["StrptimeFormat", "TimeFormat", "TimeFormatError", "parse_offset"]

_CACHE_MAX = 8192

# What each directive may match; anything else matches literally.
_DIRECTIVES = {
    "Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{1,2}", "d": r"\s?\d{1,2}", "e": r"\s?\d{1,2}",
    "H": r"\d{1,2}", "I": r"\d{1,2}", "M": r"\d{1,2}", "S": r"\d{1,2}", "j": r"\d{1,3}",
    "b": r"[A-Za-z]{3,9}", "B": r"[A-Za-z]{3,9}", "h": r"[A-Za-z]{3}", "a": r"[A-Za-z]{3,9}",
    "A": r"[A-Za-z]{3,9}", "p": r"[AaPp][Mm]", "Z": r"[A-Za-z]{1,5}",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})", "T": r"\d{1,2}:\d{1,2}:\d{1,2}", "%": "%",
    "s": r"\d+",
}
_TRAILING_ZONE = re.compile(r"\s*(Z|[+-]\d{2}:?\d{2})\s*$")


class TimeFormatError(ValueError):
    """The text does not match the time format."""


def parse_offset(text: str) -> int:
    """``+0200`` / ``+02:00`` / ``-05`` / ``Z`` -> seconds east of UTC."""
    t = text.strip()
    if t in ("Z", "z", "UTC", ""):
        return 0
    m = re.fullmatch(r"([+-])(\d{2}):?(\d{2})?", t)
    if not m:
        raise ValueError(f"expected a zone offset like +0200 or -05:00, got {text!r}")
    secs = int(m.group(2)) * 3600 + int(m.group(3) or 0) * 60
    return secs if m.group(1) == "+" else -secs


class TimeFormat:
    """A compiled time format: ``parse(text) -> epoch seconds (float)``.

    ``parse`` raises :class:`TimeFormatError` when the text does not match the format.
    ``fast`` says whether the format compiled into the slicing parser.

    Args:
        fmt: strftime format; ``%L`` is a fraction of a second of any length.
        offset: zone applied when the format has no ``%z`` (seconds east of UTC).

    Raises:
        ValueError: the format has a directive tailrace does not read (``%Q``), two
            fractions, or ``%s`` with anything but ``.%L``.
    """

    __slots__ = ("fast", "fmt", "offset", "parse", "reference")

    parse: Callable[[str], float]

    def __init__(self, fmt: str, offset: int = 0) -> None:
        self.fmt = fmt
        self.offset = offset
        self.reference = StrptimeFormat(fmt, offset)  # checks the directives
        epoch = compile_epoch(fmt, self.reference.error)
        fast = epoch or compile_fast(fmt, offset, self.reference.parse)
        self.fast = fast is not None
        self.parse = fast or self.reference.parse


class StrptimeFormat:
    """A time format read by ``strptime``, cached per distinct second.

    The reference for :class:`TimeFormat`'s compiled parser, and its fallback. Log lines
    repeat a second many times, so the text without its fraction is parsed once and the
    fraction is added arithmetically.

    Args:
        fmt: strftime format; ``%L`` is a fraction of a second of any length.
        offset: zone applied when the format has no ``%z`` (seconds east of UTC).
    """

    __slots__ = ("_frac_group", "_has_zone", "_pyfmt", "_regex", "cache", "fmt", "offset")

    def __init__(self, fmt: str, offset: int = 0) -> None:
        self.fmt = fmt
        self.offset = offset
        pattern: list[str] = []
        pyfmt: list[str] = []
        self._frac_group = False
        self._has_zone = False
        i = 0
        while i < len(fmt):
            c = fmt[i]
            if c == "%" and i + 1 < len(fmt):
                d = fmt[i + 1]
                i += 2
                if d in ("L", "f"):
                    if self._frac_group:
                        raise ValueError(f"time format {fmt!r} has two fraction directives")
                    self._frac_group = True
                    # The separator before %L is dropped from the cache key and from the
                    # strptime format; the regex still matches it literally.
                    pattern.append(r"(?P<frac>\d+)")
                    if pyfmt and pyfmt[-1] in (".", ","):
                        pyfmt.pop()
                    continue
                if d == "z":
                    self._has_zone = True
                if d not in _DIRECTIVES:
                    raise ValueError(f"time format {fmt!r}: unsupported directive %{d}")
                pattern.append(_DIRECTIVES[d])
                pyfmt.append("%" + d)
            else:
                pattern.append(r"\s+" if c == " " else re.escape(c))
                pyfmt.append(c)
                i += 1
        self._regex = re.compile("".join(pattern))
        self._pyfmt = "".join(pyfmt)
        self.cache: dict[str, float] = {}

    def parse(self, text: str) -> float:
        """Epoch seconds of ``text``.

        Raises:
            TimeFormatError: the text does not match the format.
        """
        cached = self.cache.get(text)
        if cached is not None:
            return cached
        frac = 0.0
        key = text
        if self._frac_group:
            m = self._regex.match(text)
            if m is None:
                raise self.error(text)
            digits = m.group("frac")
            frac = float("0." + digits)
            s, e = m.span("frac")
            key = (text[: s - 1] if s and text[s - 1] in ".," else text[:s]) + text[e:]
            base = self.cache.get(key)
            if base is None:
                base = self._parse_whole(key)
                self._store(key, base)
            return base + frac
        value = self._parse_whole(text)
        self._store(text, value)
        return value

    def error(self, text: str) -> TimeFormatError:
        """The error for a text that does not match."""
        return TimeFormatError(f"time {text!r} does not match format {self.fmt!r}")

    def _store(self, key: str, value: float) -> None:
        if len(self.cache) >= _CACHE_MAX:
            self.cache.clear()
        self.cache[key] = value

    def _parse_whole(self, text: str) -> float:
        pyfmt = self._pyfmt
        zone = None
        if not self._has_zone:
            m = _TRAILING_ZONE.search(text)
            if m and not _TRAILING_ZONE.search(pyfmt):
                zone = parse_offset(m.group(1))
                text = text[: m.start()]
        try:
            dt = datetime.strptime(text.strip(), pyfmt.strip())
        except ValueError as exc:
            raise TimeFormatError(f"time {text!r} does not match format {self.fmt!r}") from exc
        if "%Y" not in pyfmt and "%y" not in pyfmt:
            dt = dt.replace(year=datetime.now(timezone.utc).year)  # syslog: no year
        if dt.tzinfo is not None:
            return dt.timestamp()
        secs = calendar.timegm(dt.timetuple())
        return float(secs - (zone if zone is not None else self.offset))


