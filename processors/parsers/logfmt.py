"""The ``logfmt`` parser: ``key=value key2="quoted value" flag`` pairs become fields."""

from __future__ import annotations

from typing import Any, ClassVar

from tailrace.options import ParserOptions
from tailrace.plugins import ParserPlugin

__all__ = ["LogfmtParser", "parse_logfmt"]


def parse_logfmt(text: str) -> dict[str, Any] | None:
    """Parse logfmt; a bare key is ``True``. ``None`` when no pair is found."""
    out: dict[str, Any] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t":
            i += 1
        if i >= n:
            break
        start = i
        while i < n and text[i] not in " \t=\"":
            i += 1
        key = text[start:i]
        if not key:
            return None  # a value with no key: not logfmt
        if i < n and text[i] == "=":
            i += 1
            if i < n and text[i] == '"':
                i += 1
                buf = []
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                        buf.append({"n": "\n", "t": "\t", "r": "\r"}.get(text[i], text[i]))
                    else:
                        buf.append(text[i])
                    i += 1
                if i >= n:
                    return None  # unterminated quote
                i += 1
                out[key] = "".join(buf)
            else:
                start = i
                while i < n and text[i] not in " \t":
                    i += 1
                out[key] = text[start:i]
        else:
            out[key] = True
    return out or None


class LogfmtParser(ParserPlugin):
    name: ClassVar[str] = "logfmt"
    description: ClassVar[str] = "logfmt `key=value` pairs become fields."
    Options: ClassVar[type[ParserOptions]] = ParserOptions

    def __init__(self, options: ParserOptions) -> None:
        self.options = options

    def parse(self, text: str) -> dict[str, Any] | None:
        return parse_logfmt(text)
