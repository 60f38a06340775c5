"""What a filter may use besides its options, handed over when the chain is built."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tailrace.ratelimit import LocalRateLimits, RateLimits

from .parsers.base import BoundParser

__all__ = ["FilterContext"]


@dataclass
class FilterContext:
    """Build-time context of one filter instance.

    Attributes:
        parsers: the pipeline's parsers by name (stock + config; ``chain.Parsers`` builds a
            stock one at its first lookup).
        filter_id: the filter's stable id (its alias, or ``<plugin>.<n>``); used for the
            ``_id`` of records it emits and as the scope of its shared state.
        rate_limits: shared rate limits (Redis-backed in workers; local in tools and tests).
        base_dir: folder of the config file; relative paths in options resolve against it.
        counters: what the filter counts (``unmatched``, ``regex_timeouts``, ...); the chain
            adds them to the worker's lifecycle counters after every batch.
    """

    parsers: Mapping[str, BoundParser] = field(default_factory=dict)
    filter_id: str = ""
    rate_limits: RateLimits = field(default_factory=LocalRateLimits)
    base_dir: Path = field(default_factory=Path.cwd)
    counters: Counter[str] = field(default_factory=Counter)

    def for_filter(self, filter_id: str) -> FilterContext:
        """A context of the same pipeline for one filter instance (its own counters)."""
        return FilterContext(self.parsers, filter_id, self.rate_limits, self.base_dir)
