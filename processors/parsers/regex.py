"""The ``regex`` parser: named groups become fields; Fluent Bit's syntax works as written.

Fluent Bit (Onigmo) writes named groups as ``(?<name>...)`` and back references as
``\\k<name>``; they are rewritten to Python's ``(?P<name>...)`` / ``(?P=name)`` once, at
build time. A pattern wrapped in ``/.../`` (Fluent Bit's Ruby-style) is unwrapped.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator

from tailrace.options import ParserOptions

__all__ = ["RegexParser", "RegexParserOptions", "translate_onigmo"]

_NAMED_GROUP = re.compile(r"(?<!\\)\(\?<(?=[A-Za-z_])")
_BACKREF = re.compile(r"\\k<([A-Za-z_][A-Za-z0-9_]*)>")


def translate_onigmo(pattern: str) -> str:
    """Rewrite Onigmo/Ruby regex syntax Fluent Bit users write into Python's."""
    if len(pattern) >= 2 and pattern.startswith("/") and pattern.endswith("/"):
        pattern = pattern[1:-1]
    pattern = _NAMED_GROUP.sub("(?P<", pattern)
    return _BACKREF.sub(r"(?P=\1)", pattern)


class RegexParserOptions(ParserOptions):
    regex: str = Field(description="Regular expression with named groups `(?<name>...)`.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(translate_onigmo(value))
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class RegexParser:
    name: ClassVar[str] = "regex"
    description: ClassVar[str] = "Named groups of a regular expression become fields."
    Options: ClassVar[type[RegexParserOptions]] = RegexParserOptions

    def __init__(self, options: RegexParserOptions) -> None:
        self._match = re.compile(translate_onigmo(options.regex)).search

    def parse(self, text: str) -> dict[str, Any] | None:
        m = self._match(text)
        if m is None:
            return None
        fields: dict[str, Any] = m.groupdict()
        if None in fields.values():  # optional groups that did not take part are left out
            fields = {k: v for k, v in fields.items() if v is not None}
        return fields
