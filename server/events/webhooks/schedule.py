"""When a webhook delivery is attempted again: the Standard Webhooks schedule, jitter, Retry-After."""

from __future__ import annotations

import email.utils
import random
from dataclasses import dataclass

# Immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
DEFAULT_SCHEDULE = "0,5,300,1800,7200,18000,36000,36000"
JITTER = 0.1  # each delay is stretched or shrunk by up to 10 %, so retries of many deliveries spread out
MAX_RETRY_AFTER = 24 * 3600.0


@dataclass(frozen=True)
class RetrySchedule:
    """Delays (seconds) before each attempt; the first is before the first attempt."""

    delays: tuple[float, ...]

    @classmethod
    def parse(cls, text: str) -> RetrySchedule:
        """From `CONVHUB_WEBHOOK_RETRY_SCHEDULE`: comma-separated non-negative seconds, at least one."""
        try:
            delays = tuple(float(part) for part in text.split(","))
        except ValueError:
            raise ValueError(f"expected comma-separated seconds, got {text!r}") from None
        if not delays or any(not (0 <= d < 10 * 86400) for d in delays):
            raise ValueError(f"each delay must be between 0 and 10 days, got {text!r}")
        return cls(delays)

    @property
    def attempts(self) -> int:
        return len(self.delays)

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float | None:
        """Seconds to wait before attempt number `attempt` (0-based), with jitter; None past the last."""
        if attempt >= len(self.delays):
            return None
        jitter = 1 + (rng or random).uniform(-JITTER, JITTER)
        return self.delays[attempt] * jitter


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds asked for by a `Retry-After` header (delta-seconds or an HTTP date), capped at a day."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(max(when.timestamp() - now, 0.0), MAX_RETRY_AFTER)
