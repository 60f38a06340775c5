"""The ``csv`` parser format: one CSV row per line, fields named by ``columns``.

An example of a third-party parser: ``parse(text)`` returns the fields, or ``None`` when
the line does not fit (tailrace then keeps it unparsed or dead-letters it, as configured).
``time_key``, ``time_format`` and ``types`` work as for every parser.
"""

from __future__ import annotations

import csv
from typing import Any, ClassVar

from pydantic import Field

from tailrace.options import ParserOptions

__all__ = ["CsvParser", "CsvParserOptions"]


class CsvParserOptions(ParserOptions):
    columns: list[str] = Field(description="Field names, in column order.")
    delimiter: str = Field(",", min_length=1, max_length=1, description="Column separator.")


class CsvParser:
    name: ClassVar[str] = "csv"
    description: ClassVar[str] = "One CSV row per line; fields named by `columns`."
    Options: ClassVar[type[CsvParserOptions]] = CsvParserOptions

    def __init__(self, options: CsvParserOptions) -> None:
        self.columns = options.columns
        self.delimiter = options.delimiter

    def parse(self, text: str) -> dict[str, Any] | None:
        rows = list(csv.reader([text], delimiter=self.delimiter))
        if len(rows) != 1 or len(rows[0]) != len(self.columns):
            return None
        return dict(zip(self.columns, rows[0], strict=True))
