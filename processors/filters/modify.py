"""The ``modify`` filter: set, add, rename, copy and remove keys, like Fluent Bit's.

Operations apply in a fixed order (set, add, rename, hard_rename, copy, hard_copy,
remove, remove_wildcard), each given as a map (``{key: value}``, ``{old: new}``) or a list.
``add``, ``rename`` and ``copy`` never overwrite an existing key; the ``hard_`` variants do.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, model_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import Record

from ..context import FilterContext

__all__ = ["ModifyFilter", "ModifyOptions"]

_RESERVED = ("_id", "_tag")


class ModifyOptions(FilterOptions):
    set: dict[str, Any] = Field(default_factory=dict, description="Set KEY to VALUE.")
    add: dict[str, Any] = Field(
        default_factory=dict, description="Set KEY to VALUE when KEY is absent."
    )
    rename: dict[str, str] = Field(
        default_factory=dict, description="Rename KEY to NEW when NEW is absent."
    )
    hard_rename: dict[str, str] = Field(
        default_factory=dict, description="Rename KEY to NEW, replacing NEW."
    )
    copy_: dict[str, str] = Field(
        default_factory=dict, alias="copy", description="Copy KEY to NEW when NEW is absent."
    )
    hard_copy: dict[str, str] = Field(
        default_factory=dict, description="Copy KEY to NEW, replacing NEW."
    )
    remove: list[str] = Field(default_factory=list, description="Remove these keys.")
    remove_wildcard: list[str] = Field(
        default_factory=list, description="Remove keys starting with these prefixes."
    )

    @model_validator(mode="after")
    def _not_reserved(self) -> ModifyOptions:
        for key in (*self.remove, *self.rename, *self.hard_rename, *self.set,
                    *self.hard_copy.values(), *self.hard_rename.values()):
            if key in _RESERVED:
                raise ValueError(f"modify cannot change the reserved key {key!r}")
        return self


class ModifyFilter:
    name: ClassVar[str] = "modify"
    description: ClassVar[str] = "Set, add, rename, copy and remove record keys."
    Options: ClassVar[type[ModifyOptions]] = ModifyOptions

    def __init__(self, options: ModifyOptions, ctx: FilterContext) -> None:
        self.o = options

    def process(self, records: list[Record]) -> FilterResult:
        o = self.o
        for r in records:
            if o.set:
                r.update(o.set)
            for k, v in o.add.items():
                if k not in r:
                    r[k] = v
            for old, new in o.rename.items():
                if old in r and new not in r:
                    r[new] = r.pop(old)
            for old, new in o.hard_rename.items():
                if old in r:
                    r[new] = r.pop(old)
            for src, dst in o.copy_.items():
                if src in r and dst not in r:
                    r[dst] = r[src]
            for src, dst in o.hard_copy.items():
                if src in r:
                    r[dst] = r[src]
            for k in o.remove:
                r.pop(k, None)
            if o.remove_wildcard:
                for k in [k for k in r if k.startswith(tuple(o.remove_wildcard))
                          and k not in _RESERVED]:
                    del r[k]
        return FilterResult(records)
