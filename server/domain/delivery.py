"""Delivery rules: how a delivery status moves, and how long a failed attempt waits before the next.

Pure functions; the delivery worker (channels/delivery.py) and the receipt
path (services/delivery.py) apply them.

- `delivery_status` moves forward only: a late `sent` receipt never undoes
  `delivered`; `read` beats everything; `undelivered` and `failed` beat
  `queued` and `sent` but not a `delivered` the provider already reported.
- Retries back off exponentially with jitter, bounded by a ceiling; a
  provider's Retry-After is honoured (never retried sooner), up to a cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable

QUEUED = "queued"
SENT = "sent"
DELIVERED = "delivered"
READ = "read"
UNDELIVERED = "undelivered"
FAILED = "failed"

DELIVERY_STATUSES = (QUEUED, SENT, DELIVERED, READ, UNDELIVERED, FAILED)
_RANK = {"": -1, QUEUED: 0, SENT: 1, DELIVERED: 2, UNDELIVERED: 2, FAILED: 2, READ: 3}

# A provider's Retry-After beyond this many seconds is capped: a job never sleeps for hours.
MAX_RETRY_AFTER = 3600.0

# Error codes convhub sets itself (providers' own codes are kept as they come).
OUTCOME_UNKNOWN = "outcome_unknown"
NO_ADAPTER = "no_adapter"
NO_CREDENTIALS = "no_credentials"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"


def advance(current: str, reported: str) -> str:
    """The delivery status after a report: `reported` if it is further along than `current`, else `current`."""
    if reported not in _RANK:
        return current
    return reported if _RANK[reported] > _RANK.get(current, -1) else current


def retry_delay(
    attempt: int,
    *,
    minimum: float,
    maximum: float,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds before attempt `attempt + 1`, after `attempt` (1-based) failed retryably.

    Exponential (minimum * 2^(attempt-1), at most `maximum`) with "equal
    jitter" (half fixed, half random) so a burst of failures does not retry
    in lockstep; never sooner than the provider's Retry-After.
    """
    base = min(maximum, minimum * 2 ** max(0, attempt - 1))
    delay = base / 2 + base / 2 * rand()
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay
