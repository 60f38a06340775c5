"""Parser plugins (the ``format:`` of a ``parsers:`` entry) and their shared post-processing."""

from __future__ import annotations

from .base import BoundParser, ParseFailure
from .json_parser import JsonParser
from .logfmt import LogfmtParser
from .ltsv import LtsvParser
from .regex import RegexParser

__all__ = [
    "BoundParser",
    "JsonParser",
    "LogfmtParser",
    "LtsvParser",
    "ParseFailure",
    "RegexParser",
]
