"""What every parser shares: ``time_key``/``time_format``/``time_keep`` and ``types``.

A :class:`BoundParser` wraps one configured parser plugin: the plugin turns text into
fields; this applies the time and type conversions, compiled once at build time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tailrace.config import ParserConfig

from ..safe_regex import RegexTimeout, SafePattern
from ..timefmt import TimeFormat, TimeFormatError, parse_offset

__all__ = ["CONVERTERS", "TIME_ERROR_KEY", "BoundParser", "ParseFailure"]

#: Field that flags a record whose ``time_key`` did not fit ``time_format``; its value
#: says which time, format and parser (the text also stays under ``time_key``, unless
#: that is ``time``: the record's own, which keeps the read time).
TIME_ERROR_KEY = "time_error"



def _convert(fields: dict[str, Any],
             convs: list[tuple[str, Callable[[Any], Any]]]) -> None:
    """Apply ``types`` in place; a value that does not convert keeps its text (Fluent Bit)."""
    for key, conv in convs:
        v = fields.get(key)
        if v is not None:
            try:
                fields[key] = conv(v)
            except (ValueError, TypeError):
                pass

class ParseFailure(Exception):
    """The text did not match (or its regex ran past its budget); carries the reason.

    ``timeout`` is true when the parser's regex ran past its CPU budget on this text.
    """

    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "yes", "on", "1"):
        return True
    if s in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"not a boolean: {v!r}")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "integer": lambda v: v if type(v) is int else int(v),
    "float": lambda v: float(v),
    "bool": _to_bool,
    "string": lambda v: v if isinstance(v, str) else str(v),
    "hex": lambda v: v if type(v) is int else int(str(v), 16),
}


class BoundParser:
    """A configured parser: ``parse(text) -> (fields, time or None)``."""

    __slots__ = ("_conv", "_impl", "_time", "_types", "may_set_reserved", "name", "parse",
                 "time_errors", "time_keep", "time_key")

    def __init__(self, pc: ParserConfig) -> None:
        opts = pc.options
        self.name = opts.name
        self._impl = pc.plugin(opts)
        self.time_key = opts.time_key
        self.time_keep = opts.time_keep
        offset = parse_offset(opts.time_offset) if opts.time_offset else 0
        self._time = TimeFormat(opts.time_format, offset) if opts.time_format else None
        self._conv = [(k, CONVERTERS[t]) for k, t in opts.types.items()]
        self._types = dict(opts.types)
        #: Lines whose time did not fit ``time_format`` (kept, flagged with
        #: :data:`TIME_ERROR_KEY`); filters add what it grew by to their ``time_errors``.
        self.time_errors = 0
        #: ``parse(text) -> (fields, time or None)``; raises :class:`ParseFailure` (no match,
        #: or regex over its budget). A time that does not fit ``time_format`` leaves the
        #: fields parsed and the time None (see :attr:`time_errors`). Built once as one
        #: closure with everything bound to locals: it runs for every line.
        self.parse: Callable[[str], tuple[dict[str, Any], float | None]] = self._build()

    def _build(self) -> Callable[[str], tuple[dict[str, Any], float | None]]:
        name = self.name
        convs = self._conv
        tk, keep = self.time_key, self.time_keep
        tparse = self._time.parse if self._time is not None else None
        nomatch = f"parser {name!r} did not match"
        tfmt = self._time.fmt if self._time is not None else None
        # The record's own `time` stays the read time: a time key of that name cannot also
        # keep the text, so the flag carries it (any other time key keeps its text).
        drop = tk == "time"

        def bad_time(fields: dict[str, Any]) -> tuple[dict[str, Any], None]:
            """A time that does not fit: the fields stay parsed, the record keeps its read
            time, and it is flagged and counted. Only lines with a bad time come here."""
            self.time_errors += 1
            raw = fields.pop(tk) if drop else fields[tk]  # type: ignore[arg-type,index]
            text = repr(raw)
            if len(text) > 200:
                text = text[:200] + "..."
            fields[TIME_ERROR_KEY] = (f"time {text} does not match time_format {tfmt!r} "
                                      f"(parser {name!r})")
            return fields, None

        pattern: SafePattern | None = getattr(self._impl, "pattern", None)
        self.may_set_reserved = not isinstance(pattern, SafePattern) or bool(
            {"_id", "_tag"} & set(pattern.regex.groupindex))

        def finish(fields: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
            _convert(fields, convs)
            return finish_time(fields)

        def finish_time(fields: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
            t: float | None = None
            if tk is not None and tk in fields:
                raw = fields[tk]
                if tparse is not None and type(raw) is str:
                    try:
                        t = tparse(raw)
                    except TimeFormatError:
                        return bad_time(fields)
                elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                    t = float(raw)
                elif tparse is not None:
                    return bad_time(fields)  # null, true, a list or a map: not a time
                if not keep:
                    del fields[tk]
            return fields, t

        if not isinstance(pattern, SafePattern):
            extract = self._impl.parse

            def parse(text: str) -> tuple[dict[str, Any], float | None]:
                fields = extract(text)
                if fields is None:
                    raise ParseFailure(nomatch)
                return finish(fields)

            return parse

        # The regex parser, inlined: watchdog guard, search, groupdict, types and the time
        # in one function. A group's value is text, so `integer` and `float` are the
        # builtins themselves (no call through a converter that checks the type first).
        search, wd, ticks = pattern.regex.search, pattern.watchdog, pattern.ticks
        simple = tk is not None and tparse is not None
        text_convs = [(k, {"integer": int, "float": float}.get(t, CONVERTERS[t]))
                      for k, t in self._types.items() if t != "string"]
        # Whole-second formats repeat a timestamp on consecutive lines: one compare saves
        # the parse (a fraction differs on every line, so it gets no memo).
        fmt = self._time.fmt if self._time is not None else ""
        memo = "%L" not in fmt and "%f" not in fmt
        last_raw: str | None = None
        last_t = 0.0

        def parse_regex(text: str) -> tuple[dict[str, Any], float | None]:
            nonlocal last_raw, last_t
            wd.seq += 1
            wd.limit = ticks
            wd.active = True
            try:
                m = search(text)
            except RegexTimeout as exc:
                raise ParseFailure(f"parser {name!r}: {exc}; line left unparsed",
                                   timeout=True) from None
            finally:
                wd.active = False
            if m is None:
                raise ParseFailure(nomatch)
            fields = m.groupdict()
            if None in fields.values():  # optional groups that did not take part
                fields = {k: v for k, v in fields.items() if v is not None}
            if simple:
                _convert(fields, text_convs)
                raw = fields.get(tk)  # type: ignore[arg-type]
                if type(raw) is str:
                    if raw == last_raw:
                        t = last_t
                    else:
                        try:
                            t = tparse(raw)  # type: ignore[misc]
                        except TimeFormatError:
                            return bad_time(fields)
                        if memo:
                            last_raw, last_t = raw, t
                    if not keep:
                        del fields[tk]  # type: ignore[arg-type]
                    return fields, t
                return finish_time(fields)  # types done above
            return finish(fields)

        return parse_regex
