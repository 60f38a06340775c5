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

__all__ = ["CONVERTERS", "BoundParser", "ParseFailure"]


class ParseFailure(Exception):
    """The text did not match, or its time could not be read; carries the reason.

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

    __slots__ = ("_conv", "_impl", "_time", "may_set_reserved", "name", "parse", "time_keep",
                 "time_key")

    def __init__(self, pc: ParserConfig) -> None:
        opts = pc.options
        self.name = opts.name
        self._impl = pc.plugin(opts)
        self.time_key = opts.time_key
        self.time_keep = opts.time_keep
        offset = parse_offset(opts.time_offset) if opts.time_offset else 0
        self._time = TimeFormat(opts.time_format, offset) if opts.time_format else None
        self._conv = [(k, CONVERTERS[t]) for k, t in opts.types.items()]
        #: ``parse(text) -> (fields, time or None)``; raises :class:`ParseFailure` (no match,
        #: regex over its budget, or a time that does not fit ``time_format``). Built once
        #: as one closure with everything bound to locals: it runs for every line.
        self.parse: Callable[[str], tuple[dict[str, Any], float | None]] = self._build()

    def _build(self) -> Callable[[str], tuple[dict[str, Any], float | None]]:
        name = self.name
        convs = self._conv
        tk, keep = self.time_key, self.time_keep
        tparse = self._time.parse if self._time is not None else None
        nomatch = f"parser {name!r} did not match"
        pattern: SafePattern | None = getattr(self._impl, "pattern", None)
        self.may_set_reserved = not isinstance(pattern, SafePattern) or bool(
            {"_id", "_tag"} & set(pattern.regex.groupindex))

        def finish(fields: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
            for key, conv in convs:
                v = fields.get(key)
                if v is not None:
                    try:
                        fields[key] = conv(v)
                    except (ValueError, TypeError):
                        pass  # keep the original text, as Fluent Bit does
            t: float | None = None
            if tk is not None and tk in fields:
                raw = fields[tk]
                if tparse is not None and type(raw) is str:
                    try:
                        t = tparse(raw)
                    except TimeFormatError as exc:
                        raise ParseFailure(f"parser {name!r}: {exc}") from None
                elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                    t = float(raw)
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

        # The regex parser, inlined: watchdog guard, search, groupdict and the time of the
        # common case (no type conversions) in one function.
        search, wd, ticks = pattern.regex.search, pattern.watchdog, pattern.ticks
        simple = not convs and tk is not None and tparse is not None
        tcache = self._time.cache if self._time is not None else {}

        def parse_regex(text: str) -> tuple[dict[str, Any], float | None]:
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
                raw = fields.get(tk)  # type: ignore[arg-type]
                if type(raw) is str:
                    t = tcache.get(raw)  # repeated timestamps: no call at all
                    if t is None:
                        try:
                            t = tparse(raw)  # type: ignore[misc]
                        except TimeFormatError as exc:
                            raise ParseFailure(f"parser {name!r}: {exc}") from None
                    if not keep:
                        del fields[tk]  # type: ignore[arg-type]
                    return fields, t
            return finish(fields)

        return parse_regex
