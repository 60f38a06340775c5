"""The ``nest`` filter: move keys into a map (``nest``) or a map's keys up (``lift``).

As Fluent Bit's: ``operation: nest`` moves the top-level keys matching any ``wildcard``
(``Mem.*``; a trailing ``*`` is implied) under ``nest_under`` (merged into it when it is
already a map); ``operation: lift`` moves the keys of the map ``nested_under`` to the top
level and removes the map (a value that is not a map is left alone). ``add_prefix`` and
``remove_prefix`` rename the affected keys. Keys that already exist are overwritten, and
the reserved ``_id``, ``_tag`` and ``time`` are never nested.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..context import FilterContext
from ._fluent import fold_keys, wildcard

__all__ = ["NestFilter", "NestOptions"]

_PROTECTED = frozenset(("_id", "_tag", "time"))


class NestOptions(FilterOptions):
    operation: Literal["nest", "lift"] = Field(description="`nest` or `lift`.")
    wildcard: list[str] = Field(
        default_factory=list, description="nest: keys matching these wildcards are nested."
    )
    nest_under: str | None = Field(None, description="nest: the map to nest them under.")
    nested_under: str | None = Field(None, description="lift: the map whose keys are lifted.")
    add_prefix: str = Field("", description="Prefix the affected keys with this string.")
    remove_prefix: str = Field(
        "", description="Remove this prefix from the affected keys when they start with it."
    )

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        data = fold_keys(cls, data)
        if isinstance(data, dict) and isinstance(data.get("operation"), str):
            data = {**data, "operation": data["operation"].lower()}
        return data

    @field_validator("wildcard", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs(self) -> NestOptions:
        if self.operation == "nest" and (not self.wildcard or not self.nest_under):
            raise ValueError("operation nest needs wildcard and nest_under")
        if self.operation == "lift" and not self.nested_under:
            raise ValueError("operation lift needs nested_under")
        return self


class NestFilter(FilterPlugin):
    name: ClassVar[str] = "nest"
    description: ClassVar[str] = "Nest keys under a map, or lift a map's keys up."
    Options: ClassVar[type[NestOptions]] = NestOptions

    def __init__(self, options: NestOptions, ctx: FilterContext) -> None:
        self.o = options
        self.patterns = [wildcard(w).match for w in options.wildcard]

    def _rename(self, key: str) -> str:
        o = self.o
        if o.remove_prefix and key.startswith(o.remove_prefix):
            key = key[len(o.remove_prefix):]
        return o.add_prefix + key

    def process(self, records: list[Record]) -> FilterResult:
        nest = self._nest if self.o.operation == "nest" else self._lift
        for r in records:
            nest(r)
        return FilterResult(records)

    def _nest(self, r: Record) -> None:
        under = self.o.nest_under
        assert under is not None
        pats = self.patterns
        keys = [k for k in r if k not in _PROTECTED and any(p(k) for p in pats)]
        if not keys:
            return
        target = r.get(under)
        if not isinstance(target, dict) or under in keys:
            target = {}
        for k in keys:
            target[self._rename(k)] = r.pop(k)
        r[under] = target

    def _lift(self, r: Record) -> None:
        under = self.o.nested_under
        assert under is not None
        inner = r.get(under)
        if not isinstance(inner, dict):
            return
        del r[under]
        for k, v in inner.items():
            name = self._rename(str(k))
            if name not in _PROTECTED:
                r[name] = v
