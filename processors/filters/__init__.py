"""Filter plugins: each transforms a batch of records and never talks to Redis."""

from __future__ import annotations

from .grep import GrepFilter
from .modify import ModifyFilter
from .parser import ParserFilter

__all__ = ["GrepFilter", "ModifyFilter", "ParserFilter"]
