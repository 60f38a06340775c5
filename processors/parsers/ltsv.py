"""The ``ltsv`` parser: Labeled Tab-Separated Values, ``label:value<TAB>label:value``.

Each tab-separated item is split at its first ``:``; an item without a ``:``, or whose
label is not ``[0-9A-Za-z_.-]+`` (the labels ltsv.org allows: no spaces, ``=`` or quotes),
makes the line unparsable. So a line of another format does not "match" LTSV by accident:
with ``parser: [lt, lf]`` a logfmt line falls through to logfmt instead of becoming one
field named ``level=info status=200 ts="2024-01-02 03``. See http://ltsv.org.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from tailrace.options import ParserOptions
from tailrace.plugins import ParserPlugin

__all__ = ["LtsvParser", "parse_ltsv"]

_label = re.compile(r"[0-9A-Za-z_.-]+").fullmatch


def parse_ltsv(text: str) -> dict[str, Any] | None:
    """Fields of an LTSV line; ``None`` when an item has no label or a label LTSV forbids."""
    out: dict[str, Any] = {}
    label_ok = _label
    for item in text.rstrip("\r\n").split("\t"):
        if not item:
            continue
        label, sep, value = item.partition(":")
        if not sep or label_ok(label) is None:
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
