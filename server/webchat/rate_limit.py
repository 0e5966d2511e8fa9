"""A token bucket per visitor: a burst of posts, then a steady rate; past it the visitor gets 429.

Per process (a visitor pinned to one replica by its stream is the common
case; across replicas each enforces its own bucket). Buckets of visitors
idle long enough to be full again are forgotten, so memory follows the
number of active visitors.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBuckets:
    def __init__(self, *, burst: int, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._next_sweep = clock() + self._refill_time

    @property
    def _refill_time(self) -> float:
        return self.burst / self.rate

    def take(self, key: str) -> float:
        """0 when `key` may go now (one token taken); else the seconds until it may."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        return 0.0

    def _sweep(self, now: float) -> None:
        full = self._refill_time
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        self._next_sweep = now + full
