"""The ``throttle`` filter: a rate limit per tag (or per key value) shared by every worker.

Fluent Bit's algorithm (a sliding window of ``window`` panes of ``interval``; records pass
while the window's total stays at most ``rate`` per pane, averaged over the panes seen so
far), but the counts live in Redis, so ``rate`` holds for the whole pipeline however many
processor workers and hosts run it, not per process. One broker call per batch covers all
of the batch's subjects (:class:`tailrace.ratelimit.RateLimits`).

Records over the limit are dropped (counted as ``throttled``). A batch redone after a crash
counts again: the limit errs on the side of dropping a little more, never more records
through.
"""

from __future__ import annotations

import logging
import re
from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from tailrace.logs import RateLimiter, event
from tailrace.options import FilterOptions
from tailrace.outcome import FilterResult
from tailrace.plugins import FilterPlugin, Record

from ..accessor import MISSING, accessor
from ..context import FilterContext
from ._fluent import fold_keys

__all__ = ["ThrottleFilter", "ThrottleOptions", "parse_interval"]

log = logging.getLogger(__name__)
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_interval(value: Any) -> float:
    """``3s``, ``1.5m``, ``0.5h``, ``500ms`` or a number of seconds -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _INTERVAL.match(str(value))
    if not m:
        raise ValueError(f"expected an interval like 1s, 1.5m, 0.5h or 500ms, got {value!r}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


class ThrottleOptions(FilterOptions):
    rate: float = Field(gt=0, description="Records let through per interval, on average.")
    window: int = Field(5, ge=1, le=10_000, description="Intervals the average runs over.")
    interval: float = Field(
        1.0, description="Length of one interval: `1s`, `1.5m`, `0.5h`, `500ms` (seconds)."
    )
    key: str | None = Field(
        None, description="Limit per value of this key (record accessor, e.g. "
        "`$kubernetes['namespace_name']`) instead of per tag."
    )
    print_status: bool = Field(False, description="Log how many records were dropped.")

    @model_validator(mode="before")
    @classmethod
    def _fold(cls, data: Any) -> Any:
        return fold_keys(cls, data)

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> Any:
        seconds = parse_interval(value)
        if seconds < 0.01:
            raise ValueError(f"interval must be at least 10ms, got {value!r}")
        return seconds

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        if value is not None:
            accessor(value)
        return value


class ThrottleFilter(FilterPlugin):
    name: ClassVar[str] = "throttle"
    description: ClassVar[str] = "Rate-limit records per tag or key, shared by every worker."
    Options: ClassVar[type[ThrottleOptions]] = ThrottleOptions

    def __init__(self, options: ThrottleOptions, ctx: FilterContext) -> None:
        self.o = options
        self.scope = ctx.filter_id or "throttle"
        self.limits = ctx.rate_limits
        self.key = accessor(options.key) if options.key else None
        self.counters = ctx.counters
        self._limiter = RateLimiter()

    def _subject(self, r: Record) -> str:
        if self.key is None:
            return str(r["_tag"])
        v = self.key.get(r)
        return "" if v is MISSING or v is None else str(v)

    def process(self, records: list[Record]) -> FilterResult:
        if not records:
            return FilterResult(records)
        subjects = [self._subject(r) for r in records]
        wanted: dict[str, int] = {}
        for s in subjects:
            wanted[s] = wanted.get(s, 0) + 1
        o = self.o
        grants = self.limits.acquire(self.scope, wanted, rate=o.rate, window=o.window,
                                     interval_s=o.interval)
        if all(grants.get(s, 0) >= n for s, n in wanted.items()):
            return FilterResult(records)
        left = dict(grants)
        out: list[Record] = []
        for r, s in zip(records, subjects, strict=True):
            if left.get(s, 0) > 0:
                left[s] -= 1
                out.append(r)
        dropped = len(records) - len(out)
        self.counters["throttled"] += dropped
        if o.print_status and self._limiter.allow("status"):
            event(log, logging.INFO, "throttle_records_dropped",
                  f"dropped {dropped} of {len(records)} records over {o.rate:g} per "
                  f"{o.interval:g}s (window {o.window})", filter=self.scope)
        return FilterResult(out)
