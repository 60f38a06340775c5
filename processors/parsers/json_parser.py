"""The ``json`` parser: a JSON object's members become fields."""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

from tailrace.options import ParserOptions
from tailrace.plugins import ParserPlugin

__all__ = ["JsonParser"]


class JsonParser(ParserPlugin):
    name: ClassVar[str] = "json"
    description: ClassVar[str] = "A JSON object's members become fields."
    Options: ClassVar[type[ParserOptions]] = ParserOptions

    def __init__(self, options: ParserOptions) -> None:
        self.options = options

    def parse(self, text: str) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return None
        return doc if isinstance(doc, dict) else None
