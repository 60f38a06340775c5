"""Rate limits shared by every worker of a pipeline, asked for once per batch.

Filters never talk to Redis; a filter that needs shared state (``throttle``) gets a
:class:`RateLimits` service when the chain is built. The worker hands in
:class:`RedisRateLimits` (one script call per batch for all subjects of the batch, so a
limit holds across every worker on every host); tools and tests without a broker use
:class:`LocalRateLimits` (same algorithm, this process only).

The algorithm is Fluent Bit's throttle: a sliding window of ``window`` panes of
``interval`` each; records pass while the window's total stays at most ``rate`` times the
number of panes seen so far (at most ``window``: a slow start, not a burst at startup).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .keys import Keys
from .scriptcalls import Scripts

__all__ = ["LocalRateLimits", "RateLimits", "RedisRateLimits"]


class RateLimits(Protocol):
    """Grants records against shared sliding-window limits."""

    def acquire(self, scope: str, wanted: Mapping[str, int], *, rate: float, window: int,
                interval_s: float) -> dict[str, int]:
        """How many of ``wanted[subject]`` records may pass now, for each subject.

        Args:
            scope: the limit's owner (the filter id); subjects of two scopes never mix.
            wanted: records each subject (a tag or a key's value) brings in this batch.
            rate: records per interval, averaged over the window.
            window: number of panes the average runs over.
            interval_s: length of one pane.

        Returns:
            subject -> records granted (0 .. wanted); the grant is counted at once.

        Raises:
            whatever the broker client raises when it is unreachable (the worker retries
            the batch).
        """
        ...


class RedisRateLimits:
    """:class:`RateLimits` in Redis: one EVALSHA per call, whatever the number of subjects."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.keys = keys
        self._scripts = Scripts(client, keys)

    def acquire(self, scope: str, wanted: Mapping[str, int], *, rate: float, window: int,
                interval_s: float) -> dict[str, int]:
        if not wanted:
            return {}
        subjects = list(wanted)
        interval_ms = max(1, int(interval_s * 1000))
        granted = self._scripts.throttle(
            [self.keys.throttle(scope, s) for s in subjects], [wanted[s] for s in subjects],
            rate=rate, window=window, interval_ms=interval_ms)
        return dict(zip(subjects, granted, strict=True))


class LocalRateLimits:
    """:class:`RateLimits` for one process (``tailrace parse``, tests); ``clock`` in seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._panes: dict[tuple[str, str], dict[int, int]] = {}
        self._first: dict[tuple[str, str], int] = {}

    def acquire(self, scope: str, wanted: Mapping[str, int], *, rate: float, window: int,
                interval_s: float) -> dict[str, int]:
        cur = math.floor(self.clock() / interval_s)
        out: dict[str, int] = {}
        for subject, want in wanted.items():
            k = (scope, subject)
            panes = self._panes.setdefault(k, {})
            for old in [p for p in panes if p <= cur - window]:
                del panes[old]
            first = self._first.get(k)
            if first is None or first > cur or not panes and cur - first >= 2 * window:
                first = self._first[k] = cur
            filled = min(window, cur - first + 1)
            allowed = max(0, min(want, math.floor(rate * filled) - sum(panes.values())))
            if allowed:
                panes[cur] = panes.get(cur, 0) + allowed
            out[subject] = allowed
        return out
