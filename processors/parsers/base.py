"""What every parser shares: ``time_key``/``time_format``/``time_keep`` and ``types``.

A :class:`BoundParser` wraps one configured parser plugin: the plugin turns text into
fields; this applies the time and type conversions, compiled once at build time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tailrace.config import ParserConfig

from ..timefmt import TimeFormat, TimeFormatError, parse_offset
from .compiled import (
    JsonSpec,
    ParseFailure,
    RecordsFn,
    RegexSpec,
    Shape,
    compile_parse,
    compile_records,
)
from .json_parser import JsonParser
from .regex import RegexParser

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

    __slots__ = ("_conv", "_impl", "_json", "_regex", "_time", "_types", "may_set_reserved", "name",
                 "parse", "time_errors", "time_keep", "time_key")

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

        impl = self._impl
        if not isinstance(impl, RegexParser):
            self.may_set_reserved = True  # fields of a json line may carry anything
            self._regex = None
            # The json parser's batch function runs it inline (compiled.JsonSpec).
            self._json = JsonSpec(name, convs, _convert, tk, keep, tparse, finish_time,
                                  bad_time) if type(impl) is JsonParser else None
            extract = impl.parse

            def parse(text: str) -> tuple[dict[str, Any], float | None]:
                fields = extract(text)
                if fields is None:
                    raise ParseFailure(nomatch)
                if convs:  # most parsers have no `types`: no call for them
                    _convert(fields, convs)
                return finish_time(fields)

            return parse

        # The regex parser, compiled into one function (processors.parsers.compiled). A
        # group's value is text, so `integer` and `float` are the builtins themselves.
        pattern = impl.pattern
        self._json = None
        self.may_set_reserved = bool({"_id", "_tag"} & set(pattern.regex.groupindex))
        fmt = self._time.fmt if self._time is not None else ""
        self._regex = RegexSpec(
            pattern, name, dict(self._types), dict(CONVERTERS), tk, keep, tparse,
            # Whole-second formats repeat a timestamp on consecutive lines: one compare
            # saves the parse (a fraction differs on every line, so it gets no memo).
            time_memo="%L" not in fmt and "%f" not in fmt,
            finish=finish, finish_time=finish_time, bad_time=bad_time)
        return compile_parse(self._regex)

    def records_fn(self, shape: Shape) -> RecordsFn:
        """The parser filter's batch function for this parser alone (see compiled.py)."""
        if self._regex is not None:
            return compile_records(shape, regex=self._regex)
        if self._json is not None:
            return compile_records(shape, json=self._json)
        return compile_records(shape, parse=self.parse, name=self.name)
