"""The ``redact`` filter: mask what a regular expression finds in chosen fields.

An example of a third-party filter: a class with ``name``, ``description``, ``Options`` (a
pydantic model extending tailrace's ``FilterOptions``) and ``process(records)``, which
returns a ``FilterResult`` and never talks to Redis.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import Field

from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult

__all__ = ["RedactFilter", "RedactOptions"]


class RedactOptions(FilterOptions):
    keys: list[str] = Field(default_factory=lambda: ["log"], description="Fields to redact.")
    pattern: str = Field(
        r"[\w.+-]+@[\w-]+\.[\w.]+", description="What to mask (default: e-mail addresses)."
    )
    mask: str = Field("[redacted]", description="Replacement text.")


class RedactFilter:
    name: ClassVar[str] = "redact"
    description: ClassVar[str] = "Mask what a regular expression finds in chosen fields."
    Options: ClassVar[type[RedactOptions]] = RedactOptions

    def __init__(self, options: RedactOptions, ctx: Any) -> None:
        self.keys = options.keys
        self.sub = re.compile(options.pattern).sub
        self.mask = options.mask

    def process(self, records: list[dict[str, Any]]) -> FilterResult:
        for r in records:
            for k in self.keys:
                v = r.get(k)
                if isinstance(v, str):
                    r[k] = self.sub(self.mask, v)
        return FilterResult(records)
