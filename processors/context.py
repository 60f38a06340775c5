"""What a filter may use besides its options, handed over when the chain is built."""

from __future__ import annotations

from dataclasses import dataclass, field

from .parsers.base import BoundParser

__all__ = ["FilterContext"]


@dataclass
class FilterContext:
    """Build-time context of a filter: the pipeline's parsers by name (stock + config)."""

    parsers: dict[str, BoundParser] = field(default_factory=dict)
