"""The ``parser`` filter: parse one field of each record with one or more named parsers.

As in Fluent Bit: ``key_name`` (alias ``key``) names the field; parsers are tried in
order and the first that matches wins; ``reserve_data`` keeps the record's other fields
(otherwise only the parsed ones remain, plus ``time`` and the reserved ``_id``/``_tag``);
``preserve_key`` keeps the parsed field itself. A record no parser matches is kept
unchanged (``unmatched: keep``, optionally marked with ``error_key``) or dead-lettered
(``unmatched: dead_letter``), and counted (``unmatched``; a line on which a regex ran past
its CPU budget also counts as ``regex_timeouts``). A line whose time does not fit the
parser's ``time_format`` is parsed all the same, keeps its read time and is flagged
(``time_error``) and counted (``time_errors``); with several parsers, a later one that
reads the time wins over it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field, field_validator

from tailrace.config import Config
from tailrace.options import FilterOptions, Problem
from tailrace.outcome import FilterResult, Rejection
from tailrace.plugins import FilterPlugin, Record
from tailrace.record import Lines

from ..context import FilterContext
from ..parsers.base import BoundParser, ParseFailure
from ..parsers.compiled import RecordsFn, Shape, compile_records
from ..stock import STOCK_PARSERS

__all__ = ["ParserFilter", "ParserFilterOptions"]


class ParserFilterOptions(FilterOptions):
    key_name: str = Field(
        "log", validation_alias=AliasChoices("key_name", "key"),
        description="Field to parse (alias `key`).",
    )
    parser: list[str] = Field(description="Parser name, or a list tried in order.")
    reserve_data: bool = Field(False, description="Keep the record's other fields.")
    preserve_key: bool = Field(False, description="Keep the parsed field in the record.")
    unmatched: Literal["keep", "dead_letter"] = Field(
        "keep", description="What happens to a record no parser matches."
    )
    error_key: str | None = Field(
        None, description="With `unmatched: keep`, store the reason under this key."
    )

    @field_validator("parser", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def check_config(self, config: Config) -> list[Problem]:
        known = set(config.parsers) | {p["name"] for p in STOCK_PARSERS}
        return [
            (("parser",), f"unknown parser {name!r}; define it under parsers: or use a stock "
             f"one ({', '.join(sorted(known))})")
            for name in self.parser if name not in known
        ]


_KEEP = ("_id", "_tag", "time")
_MAX_RUNS = 64


class ParserFilter(FilterPlugin):
    name: ClassVar[str] = "parser"
    description: ClassVar[str] = "Parse a field with named parsers (regex, json, logfmt, ...)."
    Options: ClassVar[type[ParserFilterOptions]] = ParserFilterOptions

    def __init__(self, options: ParserFilterOptions, ctx: FilterContext) -> None:
        self.o = options
        self.parsers: list[BoundParser] = [ctx.parsers[n] for n in options.parser]
        self.counters = ctx.counters
        parsers = self.parsers
        self._parse: Callable[[str], tuple[dict[str, Any], float | None]] = (
            parsers[0].parse if len(parsers) == 1 else partial(_first_match, parsers))
        # Parsed fields may carry `_id`/`_tag` (a JSON line): put the record's back after.
        self._restore = any(p.may_set_reserved for p in parsers)
        self._distinct = list({id(p): p for p in parsers}.values())  # for time_errors
        # process_lines's functions, by (the batch has streams, its metadata keys): an
        # input's batches share their keys, so this holds one or two per input.
        self._runs: dict[tuple[bool, tuple[str, ...]], RecordsFn] = {}

    def _run_fn(self, streams: bool, meta: tuple[str, ...]) -> RecordsFn:
        run = self._runs.get((streams, meta))
        if run is None:
            o = self.o
            shape = Shape(o.reserve_data, o.preserve_key, streams, self._restore, meta)
            if len(self.parsers) == 1:
                run = self.parsers[0].records_fn(shape)
            else:
                run = compile_records(shape, parse=self._parse, name="+".join(o.parser))
            if len(self._runs) >= _MAX_RUNS:
                self._runs.clear()  # metadata keys that keep changing: compile afresh
            self._runs[(streams, meta)] = run
        return run

    def process_lines(self, lines: Lines) -> FilterResult | None:
        """The records of the batch's lines, parsed, built straight from the texts (no
        ``{"log": ...}`` record made and discarded per line): what ``process`` gives on
        ``lines.records()``, key order included. Lines no parser matched, and lines that
        were not valid UTF-8, get their general record."""
        o = self.o
        if o.key_name != "log" or not lines.plain:
            return None  # the record's `log` would not be the line: the general path
        before = self._time_errors()
        out: list[Any] = []
        fails = self._run_fn(lines.streams is not None, tuple(lines.meta))(
            lines.texts, lines.times, lines.offsets, lines.id_prefix, lines.tag, lines.meta,
            lines.streams, out)
        self._count_time_errors(before)
        nested = lines.nested if o.reserve_data else []
        if nested:
            meta = lines.meta
            for r in out:
                if type(r) is dict:
                    for k in nested:
                        if r[k] is meta[k]:
                            r[k] = dict(meta[k])  # each record owns its nested maps
        rejected: list[Rejection] = []
        if not fails and not lines.invalid:
            return FilterResult(out, rejected)
        for i in sorted(_failed(out, fails) | set(lines.invalid)):
            r = out[i]
            if type(r) is dict:  # parsed, but not valid UTF-8: its `_raw`, where it goes
                out[i] = self._with_raw(r, lines.record(i)) if o.reserve_data else r
            elif self._unmatched(rec := lines.record(i), r, rejected):
                out[i] = rec
            else:
                out[i] = None
        return FilterResult([r for r in out if r is not None], rejected)

    def _with_raw(self, parsed: Record, general: Record) -> Record:
        """``parsed`` with the keys in the order the general path gives (reserve_data):
        the general record's, less the parsed key unless kept, then the parsed fields."""
        key = self.o.key_name
        out = {k: parsed[k] if k in parsed else v for k, v in general.items()
               if k == "_raw" or k in parsed and (k != key or self.o.preserve_key)}
        for k, v in parsed.items():
            if k not in out:
                out[k] = v
        return out

    def process(self, records: list[Record]) -> FilterResult:
        o = self.o
        key = o.key_name
        out: list[Record] = []
        append = out.append
        rejected: list[Rejection] = []
        parse = self._parse
        reserve, preserve = o.reserve_data, o.preserve_key
        restore = self._restore
        before = self._time_errors()
        for r in records:
            value = r.get(key)
            if type(value) is not str:
                append(r)  # nothing to parse: pass through, as Fluent Bit does
                continue
            try:
                fields, t = parse(value)
            except ParseFailure as exc:
                if self._unmatched(r, exc, rejected):
                    append(r)
                continue
            if restore:
                rid, rtag = r["_id"], r["_tag"]
            if reserve:
                if not preserve:
                    del r[key]
                r.update(fields)
                new = r
            else:
                new = {k: r[k] for k in _KEEP if k in r}
                if preserve:
                    new[key] = value
                new.update(fields)
            if t is not None:
                new["time"] = t
            if restore:
                new["_id"], new["_tag"] = rid, rtag  # parsed fields never replace these
            append(new)
        self._count_time_errors(before)
        return FilterResult(out, rejected)

    def _time_errors(self) -> int:
        return sum(p.time_errors for p in self._distinct)

    def _count_time_errors(self, before: int) -> None:
        """Count the times the parsers flagged since ``before`` (kept, flagged, with the
        read time)."""
        n = self._time_errors() - before
        if n:
            self.counters["time_errors"] += n

    def _unmatched(self, r: Record, exc: ParseFailure, rejected: list[Rejection]) -> bool:
        """Count a record no parser matched; True when it goes on (kept unparsed)."""
        self.counters["unmatched"] += 1
        if exc.timeout:
            self.counters["regex_timeouts"] += 1
        if self.o.unmatched == "dead_letter":
            rejected.append(Rejection(r, str(exc)))
            return False
        if self.o.error_key:
            r[self.o.error_key] = str(exc)
        return True


def _failed(out: list[Any], fails: int) -> set[int]:
    """Indexes of the ``fails`` lines a batch function left a ParseFailure for (C-speed
    searches: most batches have a few)."""
    kinds = list(map(type, out))
    found: set[int] = set()
    i = -1
    for _ in range(fails):
        i = kinds.index(ParseFailure, i + 1)
        found.add(i)
    return found


def _first_match(parsers: list[BoundParser], value: str) -> tuple[dict[str, Any], float | None]:
    """The first parser that matches with a good time; else the first that matched (its
    time flagged); else the failure of all."""
    reasons = []
    timeout = False
    flagged: tuple[tuple[dict[str, Any], float | None], BoundParser] | None = None
    for p in parsers:
        errors = p.time_errors
        try:
            result = p.parse(value)
        except ParseFailure as exc:
            reasons.append(str(exc))
            timeout = timeout or exc.timeout
            continue
        if p.time_errors == errors:
            if flagged is not None:
                flagged[1].time_errors -= 1  # a later parser read the time: not an error
            return result
        if flagged is None:
            flagged = result, p  # the next parsers may still read its time
        else:
            p.time_errors -= 1  # counted once, for the result kept
    if flagged is not None:
        return flagged[0]
    raise ParseFailure("; ".join(reasons), timeout=timeout)
