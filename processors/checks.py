"""Whole-config checks of the processors, run by ``config check`` and every config load.

A parser's ``time_format`` and ``time_offset`` are compiled when the processor builds its
parsers; without this an unsupported directive (``%Q``) passed the check and crashed every
processor at start. Here they are compiled once at load, for every parser of the config,
and a failure is a config problem at the option's line.
"""

from __future__ import annotations

from tailrace.config import Config

from .timefmt import TimeFormat, parse_offset

__all__ = ["check_parser_times"]

Problem = tuple[tuple[str | int, ...], str]


def check_parser_times(config: Config) -> list[Problem]:
    """A problem for each parser whose ``time_format`` or ``time_offset`` does not compile."""
    problems: list[Problem] = []
    for pc in config.parsers.values():
        opts = pc.options
        if opts.time_offset:
            try:
                parse_offset(opts.time_offset)
            except ValueError as exc:
                problems.append((("parsers", pc.index, "time_offset"), str(exc)))
        if opts.time_format:
            try:
                TimeFormat(opts.time_format)
            except ValueError as exc:
                problems.append((("parsers", pc.index, "time_format"),
                                 f"{exc}; use strftime directives and %L (a fraction of a "
                                 "second), see docs/processors.md, Parsers"))
    return problems
