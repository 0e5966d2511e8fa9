"""One webhook attempt: check the target again, sign, POST, and turn the response into an Outcome.

Only 2xx counts. 410 Gone disables the endpoint (its deliveries wait until it
is enabled again); 429/503 `Retry-After` pushes the next attempt back at
least that far; anything else follows the retry schedule until it runs out
and the delivery is `failed`. Each attempt gets 5 s in all, redirects are not
followed, at most a few KiB of the answer are read, and proxies from the
environment are ignored (they would bypass the address check).
"""

from __future__ import annotations

import asyncio
import time
from functools import lru_cache

import httptools

from convhub.server.events.webhooks.http import WebhookHttp
from convhub.server.events.webhooks.policy import WebhookPolicy
from convhub.server.events.webhooks.schedule import retry_after_seconds
from convhub.server.events.webhooks.signing import signed_headers
from convhub.server.events.webhooks.targets import TargetError, parse_url, resolve
from convhub.server.store.webhooks import FAILED, PENDING, SUCCEEDED, ClaimedDelivery, Outcome

ATTEMPT_TIMEOUT = 5.0
USER_AGENT = "convhub-webhooks/1"

# Parsed once per URL (a TargetError is raised again, not cached); the address check stays per attempt.
_parse_url = lru_cache(maxsize=1024)(parse_url)


class WebhookSender:
    def __init__(self, policy: WebhookPolicy) -> None:
        self._policy = policy
        self._http = WebhookHttp()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def attempt(self, d: ClaimedDelivery) -> Outcome:
        attempts = d.attempts + 1
        started = time.time()
        try:
            target = _parse_url(d.url)
            addresses = await resolve(target, self._policy.allowed_networks)
        except TargetError as exc:
            return self._retry(d, attempts, 0, f"refused: url {exc}", None, started)
        body = d.body.encode("utf-8")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            **signed_headers(d.event_id, int(started), body, d.secrets),
        }
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                answer = await self._http.post(target, addresses[0], headers, body)
        except TimeoutError:
            return self._retry(d, attempts, 0, f"no answer within {ATTEMPT_TIMEOUT:g} s", None, started)
        except (OSError, httptools.HttpParserError) as exc:
            return self._retry(d, attempts, 0, f"{type(exc).__name__}: {exc}"[:300], None, started)
        code, retry_after = answer.status, answer.retry_after
        now_us = int(time.time() * 1_000_000)
        if 200 <= code < 300:
            return Outcome(d.id, d.endpoint_id, d.ordering_key, SUCCEEDED, attempts, now_us, code, "")
        if code == 410:
            gone = "endpoint answered 410 Gone"
            return Outcome(
                d.id, d.endpoint_id, d.ordering_key, PENDING, attempts, now_us, code, "HTTP 410", disable_reason=gone
            )
        wait = retry_after_seconds(retry_after, time.time()) if code in (429, 503) else None
        return self._retry(d, attempts, code, f"HTTP {code}", wait, started)

    def _retry(
        self, d: ClaimedDelivery, attempts: int, code: int, error: str, at_least: float | None, started: float
    ) -> Outcome:
        delay = self._policy.schedule.delay_before(attempts)
        if delay is None:
            return Outcome(d.id, d.endpoint_id, d.ordering_key, FAILED, attempts, int(started * 1_000_000), code, error)
        if at_least is not None:
            delay = max(delay, at_least)
        return Outcome(
            d.id, d.endpoint_id, d.ordering_key, PENDING, attempts, int((time.time() + delay) * 1_000_000), code, error
        )
