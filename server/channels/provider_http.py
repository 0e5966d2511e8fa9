"""Calling a provider's REST API: one rule for what an HTTP outcome means to the delivery worker.

- no answer (timeout, refused connection, reset): `SendFailed(retryable=True)`;
- 429 and 5xx: retryable, honouring `Retry-After` (seconds or an HTTP date);
- any other 4xx: final, keeping the provider's own code and message.
Each adapter reads its provider's error body; this module only classifies.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from convhub.server.channels.adapter import ChannelAccount, SendFailed


def credential(account: ChannelAccount, name: str, provider: str) -> str:
    """A credential the call needs; a final SendFailed when the account lacks it (no retry would help)."""
    value = account.credentials.get(name, "")
    if not value:
        raise SendFailed("no_credentials", f"the account has no {provider} {name}", retryable=False)
    return value


async def request(http: httpx.AsyncClient, method: str, url: str, *, provider: str, **kwargs: Any) -> httpx.Response:
    """The provider's answer; SendFailed(retryable) when there is none (the attempt may or may not have landed)."""
    try:
        return await http.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        raise SendFailed("timeout", f"{provider} did not answer: {type(exc).__name__}", retryable=True) from None
    except httpx.TransportError as exc:
        raise SendFailed("unreachable", f"cannot reach {provider}: {type(exc).__name__}", retryable=True) from None


def is_retryable(response: httpx.Response) -> bool:
    return response.status_code == 429 or response.status_code >= 500


def failure(response: httpx.Response, code: str, message: str) -> SendFailed:
    """SendFailed for a non-success answer: 429/5xx retryable (with Retry-After), other statuses final."""
    if is_retryable(response):
        return SendFailed(code, message, retryable=True, retry_after=retry_after(response))
    return SendFailed(code, message, retryable=False)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The body as a JSON object; {} for anything else (an HTML error page from a proxy, an empty body)."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds from now (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
