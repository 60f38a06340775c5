"""One retry policy for transient failures: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "DEFAULT_BACKOFF_BASE_S", "DEFAULT_BACKOFF_CAP_S"]

DEFAULT_BACKOFF_BASE_S = 0.1
DEFAULT_BACKOFF_CAP_S = 5.0


@dataclass
class Backoff:
    """Delays for consecutive failures: ``base * 2**n`` capped at ``cap``, with full jitter.

    Call :meth:`next_delay` after each failure and :meth:`reset` after a success.
    """

    base_s: float = DEFAULT_BACKOFF_BASE_S
    cap_s: float = DEFAULT_BACKOFF_CAP_S
    failures: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def next_delay(self) -> float:
        """The delay before the next attempt; never more than ``cap_s``."""
        ceiling = min(self.cap_s, self.base_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        # Half fixed, half random: spreads reconnect storms but never retries in a hot loop.
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.failures = 0
