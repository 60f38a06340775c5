"""The ``rewrite_tag`` filter: re-emit a record under a new tag chosen by a rule.

As Fluent Bit's: each rule is ``$KEY REGEX NEW_TAG KEEP``; rules are tried in order and the
first whose regex matches the (string) value of ``KEY`` wins. ``NEW_TAG`` may use ``$TAG``,
``$TAG[n]`` (the n-th dot-separated part of the tag), ``$0``..``$9`` (regex groups),
record values (``$key``, ``$key['sub']``) and ``${ENV}`` (expanded when the config loads).
The new record enters the chain again from the first filter (this filter excepted, so a
rule cannot loop on its own output); ``KEEP`` says whether the original goes on too.

Ids stay deterministic: a copy made with ``KEEP true`` gets ``<_id>-<8 hex of the filter
id>``, so a redelivered batch produces the same ids; with ``KEEP false`` the re-tagged
record keeps its ``_id`` (it is still the only record of that line).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..accessor import MISSING, accessor
from ..context import FilterContext
from ..safe_regex import RegexTimeout, SafePattern
from ._fluent import fold_keys

__all__ = ["RewriteTagFilter", "RewriteTagOptions"]

_TOKEN = re.compile(
    r"""\$TAG\[(\d+)\]|\$TAG|\$(\d)"""
    r"""|(\$[A-Za-z_][A-Za-z0-9_-]*(?:\[(?:'[^']*'|"[^"]*"|\d+)\])*)"""
)
_BOOL = {"true": True, "on": True, "yes": True, "false": False, "off": False, "no": False}


def _parse_rule(item: Any) -> tuple[str, str, str, bool]:
    if isinstance(item, dict):
        try:
            keep = item["keep"]
            rule = (str(item["key"]), str(item["regex"]), str(item["tag"]),
                    keep if isinstance(keep, bool) else _BOOL[str(keep).lower()])
        except KeyError as exc:
            raise ValueError(f"a rule map needs key, regex, tag and keep; missing {exc}") from None
    elif isinstance(item, str):
        parts = item.split()
        if len(parts) != 4 or parts[3].lower() not in _BOOL:
            raise ValueError(f"expected a rule '$KEY REGEX NEW_TAG KEEP' (KEEP true or false), "
                             f"got {item!r}")
        rule = (parts[0], parts[1], parts[2], _BOOL[parts[3].lower()])
    elif isinstance(item, (list, tuple)) and len(item) == 4:
        rule = (str(item[0]), str(item[1]), str(item[2]), bool(item[3]))
    else:
        raise ValueError(f"expected a rule '$KEY REGEX NEW_TAG KEEP', got {item!r}")
    key, rx, tag, _ = rule
    if not key.startswith("$"):
        raise ValueError(f"the rule's key must start with '$' (e.g. $log), got {key!r}")
    accessor(key)
    try:
        re.compile(rx)
    except re.error as exc:
        raise ValueError(f"invalid regex {rx!r} in rule: {exc}") from None
    if not tag:
        raise ValueError("the rule's new tag is empty")
    return rule


class RewriteTagOptions(FilterOptions):
    rule: list[tuple[str, str, str, bool]] = Field(
        description="Rules `$KEY REGEX NEW_TAG KEEP`, tried in order (or maps with key, "
        "regex, tag, keep)."
    )
    emitter_name: str | None = Field(
        None, description="Accepted for Fluent Bit compatibility and ignored: there is no "
        "separate emitter; re-emitted records are counted as `filter_emitted`."
    )

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        return fold_keys(cls, data)

    @field_validator("rule", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        return [_parse_rule(i) for i in items]


def _template(text: str) -> Callable[[str, re.Match[str], Record], str | None]:
    """Compile NEW_TAG into a function of (tag, match, record); None when a value is missing."""
    # (kind, value): "lit" text, "part" tag index, "group" regex group, "key" accessor, "tag"
    parts: list[tuple[str, Any]] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        if m.start() > pos:
            parts.append(("lit", text[pos:m.start()]))
        idx, group, key = m.groups()
        if idx is not None:
            parts.append(("part", int(idx)))
        elif group is not None:
            parts.append(("group", int(group)))
        elif key is not None:
            parts.append(("key", accessor(key)))
        else:
            parts.append(("tag", None))
        pos = m.end()
    if text[pos:]:
        parts.append(("lit", text[pos:]))

    def render(tag: str, match: re.Match[str], record: Record) -> str | None:
        out = []
        for kind, value in parts:
            if kind == "lit":
                v: Any = value
            elif kind == "tag":
                v = tag
            elif kind == "part":
                pieces = tag.split(".")
                v = pieces[value] if value < len(pieces) else None
            elif kind == "group":
                v = match.group(value) if value <= match.re.groups else None
            else:
                v = value.get(record)
            if v is MISSING or v is None:
                return None
            out.append(v if isinstance(v, str) else str(v))
        return "".join(out)

    return render


def clone(value: Any) -> Any:
    """A copy of a record deep enough that the copy's maps and lists are its own."""
    if isinstance(value, dict):
        return {k: clone(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) for v in value]
    return value


class RewriteTagFilter(FilterPlugin):
    name: ClassVar[str] = "rewrite_tag"
    description: ClassVar[str] = "Re-emit records under a new tag chosen by regex rules."
    Options: ClassVar[type[RewriteTagOptions]] = RewriteTagOptions
    #: The chain runs what this filter emits from the first filter again.
    emits: ClassVar[bool] = True

    def __init__(self, options: RewriteTagOptions, ctx: FilterContext) -> None:
        self.rules = [(accessor(k), SafePattern(rx).search, _template(tag), keep)
                      for k, rx, tag, keep in options.rule]
        self.suffix = "-" + hashlib.blake2b(ctx.filter_id.encode(), digest_size=4).hexdigest()
        self.counters = ctx.counters
        self._emitted: list[Record] = []

    def take_emitted(self) -> list[Record]:
        """Records re-emitted by the last :meth:`process` call (for the chain)."""
        out, self._emitted = self._emitted, []
        return out

    def process(self, records: list[Record]) -> FilterResult:
        out: list[Record] = []
        emitted = self._emitted
        for r in records:
            new_tag, keep = self._route(r)
            if new_tag is None:
                out.append(r)
                continue
            if keep:
                out.append(r)
                copy = clone(r)
                copy["_id"] = f"{r['_id']}{self.suffix}"
            else:
                copy = r
            copy["_tag"] = new_tag
            emitted.append(copy)
        if emitted:
            self.counters["emitted"] += len(emitted)
        return FilterResult(out)

    def _route(self, r: Record) -> tuple[str | None, bool]:
        tag = r["_tag"]
        for acc, search, render, keep in self.rules:
            value = acc.get(r)
            if not isinstance(value, str):
                continue
            try:
                m = search(value)
            except RegexTimeout:
                self.counters["regex_timeouts"] += 1
                continue
            if m is None:
                continue
            new_tag = render(tag, m, r)
            if new_tag:
                return new_tag, keep
        return None, False
