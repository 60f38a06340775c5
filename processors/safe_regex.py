"""Regular expressions with a per-call CPU budget, so a backtracking pattern cannot stall a worker.

Python's ``re`` is the fastest engine we measured on log lines (see docs/performance.md),
but it backtracks: ``^(a+)+$`` on forty ``a`` and a ``!`` takes longer than the age of the
universe. Its matching loop does check for pending signals every few thousand steps,
though, so a match can be interrupted. :class:`RegexWatchdog` uses that:

* while the chain runs a batch, a CPU-time interval timer (``ITIMER_VIRTUAL``: it counts
  the process's own CPU time, so a loaded or descheduled machine causes no false alarms)
  ticks every :data:`TICK_MS`;
* every guarded call bumps a sequence number and states its budget in ticks; a tick that
  finds the same call still running counts one more stuck tick, and when the count reaches
  the budget it raises :class:`RegexTimeout` inside the call. A call is therefore stopped
  after between ``budget`` and ``budget + TICK_MS`` of CPU time.

The guard is :class:`SafePattern`'s alone: ``search``/``match`` guard one call, and
:meth:`SafePattern.each` guards a loop (a budget per item, armed once for the loop: one
counter bump per item), so hot loops over a batch need not re-arm per line and nobody
writes the guard's stores by hand.

Costs: two ``setitimer`` calls per batch (~0.3 µs each), a ~1 µs handler every 5 ms of
CPU time, and per guarded call a few attribute stores (``each``: one counter bump per
item). Signals reach the main thread only; elsewhere (a chain run from another thread) the
budget is not enforced and :meth:`RegexWatchdog.armed` says so once in the log.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, TypeVar

from .regex_rewrite import compile_regex

__all__ = [
    "DEFAULT_REGEX_BUDGET_MS",
    "TICK_MS",
    "RegexTimeout",
    "RegexWatchdog",
    "SafePattern",
    "WATCHDOG",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_REGEX_BUDGET_MS = 50
TICK_MS = 5.0


class RegexTimeout(Exception):
    """A guarded regular expression ran past its CPU budget on one value."""


class RegexWatchdog:
    """Process-wide guard for regex calls (one per process: there is one timer signal)."""

    def __init__(self) -> None:
        self.seq = 0  # bumped by every guarded call
        self.active = False  # a guarded call is running
        self.limit = 1  # budget of the running call, in ticks
        self.timeouts = 0
        self._seen = -1  # seq at the previous tick
        self._stuck = 0  # consecutive ticks that found the same call running
        self._depth = 0
        self._installed = False
        self._warned = False

    def _tick(self, signum: int, frame: FrameType | None) -> None:
        if self.active and self.seq == self._seen:
            self._stuck += 1
            if self._stuck >= self.limit:
                # The raise ends the call; counting starts again, so a loop guarded by
                # `each` stays guarded for its next items (their bump moves seq on).
                self._stuck = 0
                self.timeouts += 1
                raise RegexTimeout(
                    f"regular expression ran past its budget of {self.limit * TICK_MS:g} ms "
                    "of CPU time (catastrophic backtracking?)")
            return
        self._seen = self.seq
        self._stuck = 0

    @contextmanager
    def armed(self) -> Iterator[None]:
        """Enforce budgets on guarded calls made inside the block (re-entrant).

        Only the main thread receives signals: elsewhere this logs once and enforces nothing.
        """
        if threading.current_thread() is not threading.main_thread():
            if not self._warned:
                self._warned = True
                log.warning("regex_watchdog_disabled: the filter chain runs outside the main "
                            "thread, so regex time budgets are not enforced there")
            yield
            return
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        if not self._installed:
            signal.signal(signal.SIGVTALRM, self._tick)
            self._installed = True
        self._depth = 1
        self._seen = -1
        self._stuck = 0
        tick = TICK_MS / 1000.0
        signal.setitimer(signal.ITIMER_VIRTUAL, tick, tick)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0)
            self._depth = 0
            self.active = False


#: The watchdog of this process; the chain arms it around each batch.
WATCHDOG = RegexWatchdog()


class SafePattern:
    """A compiled ``re`` pattern whose ``search``/``match`` stop after the CPU budget.

    Raises :class:`RegexTimeout` from ``search``/``match`` when interrupted; outside an
    armed block they behave exactly like ``re``'s.
    """

    __slots__ = ("_match", "_search", "budget_ms", "pattern", "regex", "ticks", "watchdog")

    def __init__(self, pattern: str | re.Pattern[str], flags: int = 0, *,
                 budget_ms: float = DEFAULT_REGEX_BUDGET_MS,
                 watchdog: RegexWatchdog = WATCHDOG) -> None:
        # compile_regex: re's own pattern, with lazy loops that re runs slowly rewritten
        # to the same matches (the stock nginx pattern: 2.5x faster).
        self.regex = (pattern if isinstance(pattern, re.Pattern)
                      else compile_regex(pattern, flags))
        self.pattern = self.regex.pattern
        self.budget_ms = budget_ms
        #: Budget in watchdog ticks.
        self.ticks = max(1, round(budget_ms / TICK_MS))
        self.watchdog = watchdog
        self._search = self.regex.search
        self._match = self.regex.match

    def search(self, text: str) -> re.Match[str] | None:
        return self._guarded(self._search, text)

    def match(self, text: str) -> re.Match[str] | None:
        return self._guarded(self._match, text)

    def _guarded(self, call: Callable[[str], re.Match[str] | None],
                 text: str) -> re.Match[str] | None:
        """One guarded call; the state of an enclosing guard (``each``) is put back."""
        wd = self.watchdog
        active, limit = wd.active, wd.limit
        wd.seq += 1
        wd.limit = self.ticks
        wd.active = True
        try:
            return call(text)
        finally:
            wd.active, wd.limit = active, limit

    def each(self, items: Iterable[T]) -> Iterator[T]:
        """``items``, one by one; what the loop does with each runs under this pattern's budget.

        The guard for a hot loop: armed once, then one counter bump per item (a stuck
        item is one that takes the budget, its regex call included). Call
        ``self.regex.search``/``match`` inside the loop; :class:`RegexTimeout` is raised
        there, and the loop may catch it and go on to the next item.
        """
        wd = self.watchdog
        active, limit = wd.active, wd.limit
        wd.limit = self.ticks
        wd.active = True
        try:
            for item in items:
                wd.seq += 1
                yield item
        finally:
            wd.active, wd.limit = active, limit

    @property
    def groupindex(self) -> Any:
        return self.regex.groupindex
