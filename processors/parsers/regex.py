"""The ``regex`` parser: named groups become fields; Fluent Bit's syntax works as written.

Fluent Bit (Onigmo) writes named groups as ``(?<name>...)`` and back references as
``\\k<name>``; they are rewritten to Python's ``(?P<name>...)`` / ``(?P=name)`` once, at
build time. A pattern wrapped in ``/.../`` (Fluent Bit's Ruby-style) is unwrapped.

Matching runs under the regex watchdog (:mod:`processors.safe_regex`): a line on which
the pattern backtracks past ``match_budget_ms`` of CPU time is left unparsed and counted.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field, field_validator

from tailrace.options import ParserOptions
from tailrace.plugins import ParserPlugin

from ..safe_regex import DEFAULT_REGEX_BUDGET_MS, SafePattern
from .compiled import compile_plain

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
    match_budget_ms: float = Field(
        DEFAULT_REGEX_BUDGET_MS, gt=0, le=60_000,
        description="CPU time one line may take to match before it is left unparsed "
        "(guards against catastrophic backtracking).",
    )

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(translate_onigmo(value))
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class RegexParser(ParserPlugin):
    name: ClassVar[str] = "regex"
    description: ClassVar[str] = "Named groups of a regular expression become fields."
    Options: ClassVar[type[RegexParserOptions]] = RegexParserOptions

    def __init__(self, options: RegexParserOptions) -> None:
        self.pattern = SafePattern(translate_onigmo(options.regex),
                                   budget_ms=options.match_budget_ms)
        self._parse = compile_plain(self.pattern, options.name)

    def parse(self, text: str) -> dict[str, Any] | None:
        """Fields of the named groups that took part; ``None`` when the pattern does not match.

        Bound parsers compile their own function with ``types`` and the time
        (:mod:`processors.parsers.compiled`, the same writer); this is the plain one.

        Raises:
            RegexTimeout: the match ran past ``match_budget_ms`` (the chain is armed).
        """
        return self._parse(text)
