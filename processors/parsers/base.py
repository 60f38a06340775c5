"""What every parser shares: ``time_key``/``time_format``/``time_keep`` and ``types``.

A :class:`BoundParser` wraps one configured parser plugin: the plugin turns text into
fields; this applies the time and type conversions, compiled once at build time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tailrace.config import PluginConfig
from tailrace.options import ParserOptions

from ..safe_regex import RegexTimeout
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

    __slots__ = ("_conv", "_impl", "_time", "name", "time_keep", "time_key")

    def __init__(self, pc: PluginConfig) -> None:
        opts: ParserOptions = pc.options
        self.name = opts.name
        self._impl = pc.plugin(opts)
        self.time_key = opts.time_key
        self.time_keep = opts.time_keep
        offset = parse_offset(opts.time_offset) if opts.time_offset else 0
        self._time = TimeFormat(opts.time_format, offset) if opts.time_format else None
        self._conv = [(k, CONVERTERS[t]) for k, t in opts.types.items()]

    def parse(self, text: str) -> tuple[dict[str, Any], float | None]:
        """Fields and the record time (``None`` when the parser sets no time).

        Raises:
            ParseFailure: no match, or a time/type conversion failed (with the reason).
        """
        try:
            fields = self._impl.parse(text)
        except RegexTimeout as exc:
            raise ParseFailure(f"parser {self.name!r}: {exc}; line left unparsed",
                               timeout=True) from None
        if fields is None:
            raise ParseFailure(f"parser {self.name!r} did not match")
        for key, conv in self._conv:
            v = fields.get(key)
            if v is not None:
                try:
                    fields[key] = conv(v)
                except (ValueError, TypeError):
                    pass  # keep the original text, as Fluent Bit does
        t: float | None = None
        tk = self.time_key
        if tk is not None and tk in fields:
            raw = fields[tk]
            if self._time is not None and isinstance(raw, str):
                try:
                    t = self._time.parse(raw)
                except TimeFormatError as exc:
                    raise ParseFailure(f"parser {self.name!r}: {exc}") from None
            elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
                t = float(raw)
            if not self.time_keep:
                del fields[tk]
        return fields, t
