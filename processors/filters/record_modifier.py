"""The ``record_modifier`` filter: append fields, remove keys, or keep only an allowlist.

As Fluent Bit's: ``record`` appends ``KEY VALUE`` pairs (``${ENV}`` expands when the config
loads), ``remove_key`` removes keys, ``allowlist_key`` (alias ``whitelist_key``) removes
every key not listed; ``remove_key`` and ``allowlist_key`` exclude each other. ``uuid_key``
adds a UUID derived from the record's ``_id`` (the same on a redelivery). The reserved
``_id``, ``_tag`` and ``time`` are always kept.
"""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from pydantic import AliasChoices, Field, field_validator, model_validator

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..context import FilterContext
from ._fluent import fold_keys, split_words

__all__ = ["RecordModifierFilter", "RecordModifierOptions"]

_KEEP = ("_id", "_tag", "time")
_NAMESPACE = uuid.UUID("5d1b0f0e-7a3c-4a57-9d4c-2f0b8c1e6a10")


class RecordModifierOptions(FilterOptions):
    record: list[tuple[str, Any]] = Field(
        default_factory=list, description="Append KEY VALUE (`KEY VALUE` or a map)."
    )
    remove_key: list[str] = Field(default_factory=list, description="Remove these keys.")
    allowlist_key: list[str] = Field(
        default_factory=list, validation_alias=AliasChoices("allowlist_key", "whitelist_key"),
        description="Keep only these keys (alias `whitelist_key`).",
    )
    uuid_key: str | None = Field(
        None, description="Add a UUID (derived from `_id`, stable on redelivery) under this key."
    )

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        return fold_keys(cls, data)

    @field_validator("record", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        items = value if isinstance(value, list) else [value]
        out: list[tuple[str, Any]] = []
        for item in items:
            if isinstance(item, dict):
                out.extend((str(k), v) for k, v in item.items())
            elif isinstance(item, str):
                key, val = split_words(item, 2, "'KEY VALUE'")
                out.append((key, val))
            else:
                out.append(item)
        return out

    @field_validator("remove_key", "allowlist_key", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _exclusive(self) -> RecordModifierOptions:
        if self.remove_key and self.allowlist_key:
            raise ValueError("remove_key and allowlist_key exclude each other (as in Fluent "
                             "Bit); use one of them, or two record_modifier filters")
        for key, _ in self.record:
            if key in ("_id", "_tag"):
                raise ValueError(f"record cannot set the reserved key {key!r}")
        return self


class RecordModifierFilter(FilterPlugin):
    name: ClassVar[str] = "record_modifier"
    description: ClassVar[str] = "Append fields, remove keys or keep an allowlist of keys."
    Options: ClassVar[type[RecordModifierOptions]] = RecordModifierOptions

    def __init__(self, options: RecordModifierOptions, ctx: FilterContext) -> None:
        self.append = dict(options.record)
        self.remove = [k for k in options.remove_key if k not in _KEEP]
        self.allow = frozenset((*options.allowlist_key, *_KEEP)) if options.allowlist_key else None
        self.uuid_key = options.uuid_key

    def process(self, records: list[Record]) -> FilterResult:
        append, remove, allow, uuid_key = self.append, self.remove, self.allow, self.uuid_key
        out = records
        if allow is not None:
            out = [{k: v for k, v in r.items() if k in allow} for r in records]
        for r in out:
            for k in remove:
                r.pop(k, None)
            if append:
                r.update(append)
            if uuid_key:
                r[uuid_key] = str(uuid.uuid5(_NAMESPACE, str(r.get("_id", ""))))
        return FilterResult(out)
