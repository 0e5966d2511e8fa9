"""Retry policy and overall deadline, shared by the sync and async clients.

Only UNAVAILABLE is retried: it is the one code that means "the request did
not get a verdict, try again" (server restarting, connection reset, load
balancer draining). Everything else is an answer and is raised at once.

Retrying is only safe when a repeat cannot do the work twice, so callers pass
`idempotent`: reads always are; creates, sends and ingests are once they carry
a `request_id` (AIP-155 — the server returns the first result for a repeat),
which the client fills in automatically. Updates and deletes are not retried.

The caller's timeout is one deadline for the whole call, retries and sleeps
included: each attempt gets what is left, and we never sleep past it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import grpc


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    The n-th retry (n = 1, 2, ...) waits `min(max_backoff, initial_backoff *
    multiplier ** (n - 1))`, reduced by a random fraction up to `jitter`, so
    that clients knocked off by the same outage do not come back in lockstep.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2
    retryable_codes: frozenset[grpc.StatusCode] = field(
        default_factory=lambda: frozenset({grpc.StatusCode.UNAVAILABLE})
    )

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff < 0 or self.max_backoff < 0 or self.multiplier < 1:
            raise ValueError("backoffs must be >= 0 and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within [0, 1]")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (1-based)."""
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (retry - 1))
        return base * (1 - self.jitter * random.random())

    def delay_before_retry(
        self, attempt: int, code: grpc.StatusCode, *, idempotent: bool, deadline: Deadline
    ) -> float | None:
        """Seconds to sleep before another attempt, or None to give up.

        `attempt` is the number of attempts made so far. We give up when the
        code is not retryable, the call is not safe to repeat, attempts are
        used up, or the backoff would eat the rest of the deadline.
        """
        if code not in self.retryable_codes or not idempotent or attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt)
        remaining = deadline.remaining()
        if remaining is not None and remaining <= delay:
            return None
        return delay


NO_RETRY = RetryPolicy(max_attempts=1)
"""A policy that never retries, for callers that do their own."""


@dataclass(frozen=True)
class Deadline:
    """An absolute point in time on the monotonic clock (None: no deadline)."""

    at: float | None

    @classmethod
    def after(cls, timeout: float | None) -> Deadline:
        return cls(None if timeout is None else time.monotonic() + timeout)

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None when there is no deadline."""
        return None if self.at is None else max(0.0, self.at - time.monotonic())
