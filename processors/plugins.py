"""The processors' built-in filters and parser formats, one line each.

Third-party ones come from the ``tailrace.filters`` / ``tailrace.parsers`` entry points.
"""

from __future__ import annotations

from .filters.grep import GrepFilter
from .filters.modify import ModifyFilter
from .filters.parser import ParserFilter
from .parsers.json_parser import JsonParser
from .parsers.logfmt import LogfmtParser
from .parsers.regex import RegexParser

__all__ = ["FILTERS", "PARSERS"]

FILTERS: list[type] = [
    ParserFilter,
    GrepFilter,
    ModifyFilter,
]

PARSERS: list[type] = [
    RegexParser,
    JsonParser,
    LogfmtParser,
]
