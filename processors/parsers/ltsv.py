"""The ``ltsv`` parser: Labeled Tab-Separated Values, ``label:value<TAB>label:value``.

As Fluent Bit's: each tab-separated item is split at its first ``:``; an item without a
``:`` makes the line unparsable. See http://ltsv.org for the format.
"""

from __future__ import annotations

from typing import Any, ClassVar

from tailrace.options import ParserOptions
from tailrace.plugins import ParserPlugin

__all__ = ["LtsvParser", "parse_ltsv"]


def parse_ltsv(text: str) -> dict[str, Any] | None:
    """Fields of an LTSV line; ``None`` when an item has no label."""
    out: dict[str, Any] = {}
    for item in text.rstrip("\r\n").split("\t"):
        if not item:
            continue
        label, sep, value = item.partition(":")
        if not sep or not label:
            return None
        out[label] = value
    return out or None


class LtsvParser(ParserPlugin):
    name: ClassVar[str] = "ltsv"
    description: ClassVar[str] = "LTSV `label:value` items separated by tabs become fields."
    Options: ClassVar[type[ParserOptions]] = ParserOptions

    def __init__(self, options: ParserOptions) -> None:
        self.options = options

    def parse(self, text: str) -> dict[str, Any] | None:
        return parse_ltsv(text)
