"""Helpers the filters' options share: Fluent Bit's spellings and rule lists.

Fluent Bit's docs write keys as ``Nest_under`` or ``Operation``; our YAML is lowercase.
:func:`fold_keys` maps any capitalisation of a known option onto its field, so configs
copied from Fluent Bit's YAML examples work as written.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from pydantic import BaseModel

__all__ = ["fold_keys", "split_words", "wildcard"]


def fold_keys(model: type[BaseModel], data: Any) -> Any:
    """``data`` with keys matched case-insensitively to ``model``'s fields and aliases."""
    if not isinstance(data, dict):
        return data
    names: dict[str, str] = {}
    for fname, f in model.model_fields.items():
        names[fname.lower()] = fname
        if isinstance(f.alias, str):
            names[f.alias.lower()] = f.alias
        va = f.validation_alias
        for choice in getattr(va, "choices", ()) or ():
            if isinstance(choice, str):
                names[choice.lower()] = choice
    out: dict[Any, Any] = {}
    for k, v in data.items():
        key = names.get(k.lower(), k) if isinstance(k, str) and k not in names.values() else k
        out[key] = v
    return out


def split_words(text: str, n: int, what: str) -> list[str]:
    """Split Fluent Bit's ``"A B C"`` option form into ``n`` words (the last takes the rest)."""
    parts = text.strip().split(None, n - 1)
    if len(parts) != n:
        raise ValueError(f"expected {what}, got {text!r}")
    return parts


def wildcard(pattern: str) -> re.Pattern[str]:
    """Fluent Bit's key wildcard: ``Mem.*`` or ``Mem`` match keys starting with ``Mem``."""
    return re.compile(fnmatch.translate(pattern.rstrip("*") + "*"))
