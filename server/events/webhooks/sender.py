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

import httpx

from convhub.server.events.webhooks.policy import WebhookPolicy
from convhub.server.events.webhooks.schedule import retry_after_seconds
from convhub.server.events.webhooks.signing import signed_headers
from convhub.server.events.webhooks.targets import TargetError, parse_url, resolve
from convhub.server.store.webhooks import FAILED, PENDING, SUCCEEDED, ClaimedDelivery, Outcome

ATTEMPT_TIMEOUT = 5.0
MAX_RESPONSE_BYTES = 4096
USER_AGENT = "convhub-webhooks/1"
# httpx's pool slows with many concurrent requests per client (DESIGN.md): attempts take turns
# over several clients, each holding a few connections per endpoint.
CLIENTS = 8
CONNECTIONS_PER_CLIENT = 32


class WebhookSender:
    def __init__(self, policy: WebhookPolicy) -> None:
        self._policy = policy
        limits = httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT)
        self._clients = [
            httpx.AsyncClient(
                timeout=httpx.Timeout(ATTEMPT_TIMEOUT), limits=limits, follow_redirects=False, trust_env=False
            )
            for _ in range(CLIENTS)
        ]
        self._turn = 0

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    def _client(self) -> httpx.AsyncClient:
        self._turn = (self._turn + 1) % len(self._clients)
        return self._clients[self._turn]

    async def attempt(self, d: ClaimedDelivery) -> Outcome:
        attempts = d.attempts + 1
        started = time.time()
        try:
            target = parse_url(d.url)
            addresses = await resolve(target, self._policy.allowed_networks)
        except TargetError as exc:
            return self._retry(d, attempts, 0, f"refused: url {exc}", None, started)
        body = d.body.encode("utf-8")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "host": target.host_header,
            **signed_headers(d.event_id, int(started), body, d.secrets),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                async with self._client().stream(
                    "POST", target.url_for(addresses[0]), content=body, headers=headers, extensions=extensions
                ) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= MAX_RESPONSE_BYTES:
                            break
                    code = response.status_code
                    retry_after = response.headers.get("retry-after")
        except TimeoutError:
            return self._retry(d, attempts, 0, f"no answer within {ATTEMPT_TIMEOUT:g} s", None, started)
        except httpx.HTTPError as exc:
            return self._retry(d, attempts, 0, f"{type(exc).__name__}: {exc}"[:300], None, started)
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
