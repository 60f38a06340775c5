"""The ``grep`` filter: keep records whose fields match (``regex``), drop those that do
(``exclude``), like Fluent Bit's.

Rules are ``"KEY REGEX"`` strings (Fluent Bit's form; ``KEY`` may be a record accessor like
``$kubernetes['labels']['app']``) or ``{KEY: REGEX}`` maps, one or a list. ``logical_op``:

* ``legacy`` (default): every ``regex`` rule must match and no ``exclude`` rule may;
* ``and`` / ``or``: the rules of the one kind given combine with AND / OR (giving both kinds
  is an error, as in Fluent Bit).

A missing key never matches (so a ``regex`` rule drops records without the key). Values
that are not text are matched as their string form. A rule whose regex runs past its CPU
budget on a value counts as not matching (counted as ``regex_timeouts``).
"""

from __future__ import annotations

import re
from itertools import compress, repeat
from operator import not_
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..accessor import MISSING, Accessor, accessor
from ..context import FilterContext
from ..safe_regex import RegexTimeout, SafePattern

__all__ = ["GrepFilter", "GrepOptions"]


def _rules(value: Any) -> Any:
    """``{k: re}`` | ``"k re"`` | list of either -> list of (key, regex) pairs."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    out: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, dict):
            out.extend((str(k), str(v)) for k, v in item.items())
        elif isinstance(item, str):
            key, sep, rx = item.strip().partition(" ")
            if not sep or not rx.strip():
                raise ValueError(f"expected 'KEY REGEX', got {item!r}")
            out.append((key, rx.strip()))
        else:
            raise ValueError(f"expected a map of key: regex or 'KEY REGEX' strings, got {item!r}")
    for key, rx in out:
        try:
            re.compile(rx)
        except re.error as exc:
            raise ValueError(f"invalid regex for key {key!r}: {exc}") from None
        accessor(key)  # raises with the expected form
    return out


def literal(pattern: str) -> tuple[str, bool] | None:
    """(text, anchored) for a regex that is a plain literal, optionally ``^``-anchored.

    ``^/healthz`` and ``error`` need no regex engine (and cannot backtrack); None otherwise.
    """
    anchored = pattern.startswith("^")
    body = pattern[1:] if anchored else pattern
    if not body or re.escape(body) != body:
        return None
    return body, anchored


class GrepOptions(FilterOptions):
    regex: list[tuple[str, str]] = Field(
        default_factory=list, description="Keep records whose KEY matches REGEX (`KEY REGEX`)."
    )
    exclude: list[tuple[str, str]] = Field(
        default_factory=list, description="Drop records whose KEY matches REGEX (`KEY REGEX`)."
    )
    logical_op: Literal["legacy", "and", "or"] = Field(
        "legacy",
        description="`and`/`or` combine several rules of one kind; `legacy`: every "
        "`regex` must match and no `exclude` may.",
    )

    @field_validator("regex", "exclude", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return _rules(value)

    @field_validator("logical_op", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_kind_with_op(self) -> GrepOptions:
        if self.logical_op != "legacy" and self.regex and self.exclude:
            raise ValueError(f"with logical_op {self.logical_op!r} give either regex or "
                             "exclude rules, not both (as in Fluent Bit); use two grep "
                             "filters, or logical_op: legacy")
        return self


class GrepFilter(FilterPlugin):
    name: ClassVar[str] = "grep"
    description: ClassVar[str] = "Keep or drop records by regular expressions on fields."
    Options: ClassVar[type[GrepOptions]] = GrepOptions

    def __init__(self, options: GrepOptions, ctx: FilterContext) -> None:
        keep = [(accessor(k), SafePattern(rx)) for k, rx in options.regex]
        drop = [(accessor(k), SafePattern(rx)) for k, rx in options.exclude]
        self.keep = [(a, p.search) for a, p in keep]
        self.drop = [(a, p.search) for a, p in drop]
        self.op = options.logical_op
        self.counters = ctx.counters
        rules = [(a, p, True) for a, p in keep] + [(a, p, False) for a, p in drop]
        # One rule on a top-level key (the common case) takes a lean loop.
        self._single = (rules[0][0].head, rules[0][1], rules[0][2]) if (
            len(rules) == 1 and not rules[0][0].path) else None
        #: (text, anchored) when that one rule is a plain literal (str methods, no regex).
        self._literal = literal(self._single[1].pattern) if self._single else None

    def _hit(self, record: Record, acc: Accessor, search: Any) -> bool:
        v = record.get(acc.head, MISSING) if not acc.path else acc.get(record)
        if v is MISSING or v is None:
            return False
        try:
            return search(v if isinstance(v, str) else str(v)) is not None
        except RegexTimeout:
            self.counters["regex_timeouts"] += 1
            return False

    def _process_single(self, records: list[Record]) -> list[Record]:
        assert self._single is not None
        key, pattern, want = self._single
        out: list[Record] = []
        append = out.append
        lit = self._literal
        if lit is not None:  # str.startswith / `in`: no regex call per record
            text, anchored = lit
            values: list[Any] = list(map(dict.get, records, repeat(key)))
            if set(map(type, values)) == {str}:  # the usual batch: all text, at C speed
                test = str.startswith if anchored else str.__contains__
                hits = map(test, values, repeat(text))
                return list(compress(records, hits if want else map(not_, hits)))
            for r, v in zip(records, values, strict=True):  # some not text: one by one
                if v is None:
                    hit = False
                else:
                    s = v if type(v) is str else str(v)
                    hit = s.startswith(text) if anchored else text in s
                if hit is want:
                    append(r)
            return out
        search = pattern.regex.search
        for r in pattern.each(records):  # the watchdog guard, armed once for the loop
            v = r.get(key)
            if v is None:
                hit = False
            else:
                try:
                    hit = search(v if type(v) is str else str(v)) is not None
                except RegexTimeout:
                    self.counters["regex_timeouts"] += 1
                    hit = False
            if hit is want:
                append(r)
        return out

    def process(self, records: list[Record]) -> FilterResult:
        keep, drop, hit = self.keep, self.drop, self._hit
        if self._single is not None:
            out = self._process_single(records)
        elif not keep and not drop:
            out = records
        elif self.op == "or":
            if keep:
                out = [r for r in records if any(hit(r, a, s) for a, s in keep)]
            else:
                out = [r for r in records if not any(hit(r, a, s) for a, s in drop)]
        elif self.op == "and":
            if keep:
                out = [r for r in records if all(hit(r, a, s) for a, s in keep)]
            else:
                out = [r for r in records if not all(hit(r, a, s) for a, s in drop)]
        else:
            out = [r for r in records
                   if all(hit(r, a, s) for a, s in keep)
                   and not any(hit(r, a, s) for a, s in drop)]
        if len(out) != len(records):
            self.counters["dropped"] += len(records) - len(out)
        return FilterResult(out)
