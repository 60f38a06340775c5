"""The processors' built-in filters and parser formats, one line each: name -> module:class.

A process imports a filter's module when its config names the filter (the registry's
:class:`~tailrace.plugins.PluginTable`), so ``tailrace run`` does not import all nine at
every start. Third-party ones come from the ``tailrace.filters`` / ``tailrace.parsers``
entry points.
"""

from __future__ import annotations

from .checks import check_parser_times

__all__ = ["CONFIG_CHECKS", "FILTERS", "PARSERS"]

FILTERS: dict[str, str] = {
    "parser": "processors.filters.parser:ParserFilter",
    "grep": "processors.filters.grep:GrepFilter",
    "modify": "processors.filters.modify:ModifyFilter",
    "record_modifier": "processors.filters.record_modifier:RecordModifierFilter",
    "nest": "processors.filters.nest:NestFilter",
    "rewrite_tag": "processors.filters.rewrite_tag:RewriteTagFilter",
    "throttle": "processors.filters.throttle:ThrottleFilter",
    "kubernetes": "processors.filters.kubernetes:KubernetesFilter",
    "python": "processors.filters.python_filter:PythonFilter",
}

PARSERS: dict[str, str] = {
    "regex": "processors.parsers.regex:RegexParser",
    "json": "processors.parsers.json_parser:JsonParser",
    "logfmt": "processors.parsers.logfmt:LogfmtParser",
    "ltsv": "processors.parsers.ltsv:LtsvParser",
}

#: Whole-config checks of the processors (Registry.checks).
CONFIG_CHECKS = [check_parser_times]
