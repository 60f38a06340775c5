"""The processors' built-in filters and parser formats, one line each.

Third-party ones come from the ``tailrace.filters`` / ``tailrace.parsers`` entry points.
"""

from __future__ import annotations

from tailrace.plugins import FilterPlugin, ParserPlugin

from .checks import check_parser_times
from .filters.grep import GrepFilter
from .filters.kubernetes import KubernetesFilter
from .filters.modify import ModifyFilter
from .filters.nest import NestFilter
from .filters.parser import ParserFilter
from .filters.python_filter import PythonFilter
from .filters.record_modifier import RecordModifierFilter
from .filters.rewrite_tag import RewriteTagFilter
from .filters.throttle import ThrottleFilter
from .parsers.json_parser import JsonParser
from .parsers.logfmt import LogfmtParser
from .parsers.ltsv import LtsvParser
from .parsers.regex import RegexParser

__all__ = ["CONFIG_CHECKS", "FILTERS", "PARSERS"]

FILTERS: list[type[FilterPlugin]] = [
    ParserFilter,
    GrepFilter,
    ModifyFilter,
    RecordModifierFilter,
    NestFilter,
    RewriteTagFilter,
    ThrottleFilter,
    KubernetesFilter,
    PythonFilter,
]

PARSERS: list[type[ParserPlugin]] = [
    RegexParser,
    JsonParser,
    LogfmtParser,
    LtsvParser,
]

#: Whole-config checks of the processors (Registry.checks).
CONFIG_CHECKS = [check_parser_times]
