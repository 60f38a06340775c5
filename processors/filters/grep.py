"""The ``grep`` filter: keep records whose fields match (``regex``), drop those that do
(``exclude``), like Fluent Bit's. Rules are ``{key: regex}`` maps or ``"KEY REGEX"``
strings; several rules combine with ``logical_op`` (``legacy`` = all regex rules must
match and no exclude rule may match)."""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import Record

from ..context import FilterContext

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
    return out


class GrepOptions(FilterOptions):
    regex: list[tuple[str, str]] = Field(
        default_factory=list, description="Keep records whose KEY matches REGEX."
    )
    exclude: list[tuple[str, str]] = Field(
        default_factory=list, description="Drop records whose KEY matches REGEX."
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


def _get(record: Record, key: str) -> Any:
    if key.startswith("$"):  # record accessor: $kubernetes['pod'] or $a.b
        parts = re.findall(r"\['([^']*)'\]|\[\"([^\"]*)\"\]|([^.\[\]$]+)", key)
        cur: Any = record
        for a, b, c in parts:
            if not isinstance(cur, dict):
                return None
            cur = cur.get(a or b or c)
        return cur
    return record.get(key)


class GrepFilter:
    name: ClassVar[str] = "grep"
    description: ClassVar[str] = "Keep or drop records by regular expressions on fields."
    Options: ClassVar[type[GrepOptions]] = GrepOptions

    def __init__(self, options: GrepOptions, ctx: FilterContext) -> None:
        self.keep = [(k, re.compile(rx).search) for k, rx in options.regex]
        self.drop = [(k, re.compile(rx).search) for k, rx in options.exclude]
        self.op = options.logical_op

    def _hit(self, record: Record, key: str, search: Any) -> bool:
        v = _get(record, key)
        if v is None:
            return False
        return search(v if isinstance(v, str) else str(v)) is not None

    def process(self, records: list[Record]) -> FilterResult:
        keep, drop, hit = self.keep, self.drop, self._hit
        if self.op == "or":
            out = [r for r in records
                   if (not keep or any(hit(r, k, s) for k, s in keep))
                   and not (drop and any(hit(r, k, s) for k, s in drop))]
        elif self.op == "and":
            out = [r for r in records
                   if (not keep or all(hit(r, k, s) for k, s in keep))
                   and not (drop and all(hit(r, k, s) for k, s in drop))]
        else:
            out = [r for r in records
                   if all(hit(r, k, s) for k, s in keep)
                   and not any(hit(r, k, s) for k, s in drop)]
        return FilterResult(out)
