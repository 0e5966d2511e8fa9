"""What a provider module supplies: verify and parse its inbound hooks, and send one message.

One module per provider under `server/channels/` (`twilio.py`, `telnyx.py`,
`line.py`, later `smtp.py`, `webchat.py`) exports an object following
`ChannelAdapter`. Adapters speak only the provider's wire format; the rules
around them live elsewhere and are shared by every provider:

- inbound: the hook route (`hook_routes`) verifies the signature, parses the
  payload, and hands each message to `HookContext.ingest` (the same
  `IngestService` as gRPC `IngestMessage`: room matching, dedupe by provider
  message id, group commit, events) and each receipt to `HookContext.receipt`;
- outbound: the delivery worker (`server/channels/delivery.py`) claims a job,
  calls `send`, and owns retries, backoff, fallback, the message's status and
  the "outcome unknown" rule (`find_sent`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx
from starlette.routing import BaseRoute

from convhub.server.domain.addresses import Address
from convhub.server.domain.messages import Media
from convhub.server.services.ingest import IngestService


@dataclass(frozen=True, slots=True)
class ChannelAccount:
    """A customer's account with one provider, credentials opened (never logged, never returned)."""

    id: str
    customer_id: str
    channel: str  # the conversation type's stored name: "message" (SMS/MMS), "line", ...
    provider: str  # "twilio", "telnyx", "line"
    address: Address | None
    credentials: Mapping[str, str] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Outbound:
    """One delivery attempt of one message to one recipient."""

    message_id: str
    job_id: str  # stable across retries of this delivery (LINE's X-Line-Retry-Key is derived from it)
    sender: Address  # our address on this account
    recipient: Address
    text: str
    medias: Sequence[Media] = ()
    reply_token: str | None = None  # LINE: answer with the reply API while the token is fresh
    status_callback_url: str | None = None  # where the provider posts delivery receipts
    # The provider's id for this delivery when the worker already knows one (find_sent can then look it up).
    provider_message_id: str = ""
    subject: str = ""  # email: the message's subject ("" = the adapter's default)
    conversation_id: str = ""  # email: threads the message to the conversation's earlier emails


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message: `done` for the message, `delivery_status` refined later by receipts."""

    provider_message_id: str
    delivery_status: str = "sent"  # queued | sent | delivered


class SendFailed(Exception):
    """The provider refused or could not be reached; the worker decides what happens next.

    `retryable`: 5xx, 429, timeouts, connection errors (retried with backoff,
    honouring `retry_after`); 4xx are final and keep the provider's code and
    message on the message.
    """

    def __init__(self, code: str, message: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class CannotTell(Exception):
    """The adapter cannot find out whether an earlier attempt reached the provider."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A provider's report on a message we sent (status callback, `message.finalized`, ...)."""

    account_id: str
    provider_message_id: str
    delivery_status: str  # queued | sent | delivered | read | undelivered | failed
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class HookContext:
    """What hook routes may use; built once by the app."""

    load_account: Callable[[str, str], Awaitable[ChannelAccount | None]]  # (provider, account id) -> live account
    ingest: IngestService  # the one shared by gRPC IngestMessage (one group commit for all transports)
    receipt: Callable[[Receipt], Awaitable[None]]
    public_url: str  # CONVHUB_PUBLIC_URL: what providers see (Twilio signs over it)
    http: httpx.AsyncClient  # for follow-up calls (LINE profile and content)


class ChannelAdapter(Protocol):
    provider: str
    channel: str

    async def send(self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound) -> Accepted:
        """Deliver `outbound` once; raise SendFailed. Must be safe to call again for the same job_id
        only where the provider de-duplicates (LINE retry key); otherwise the worker asks find_sent first."""

    async def find_sent(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, since_us: int
    ) -> Accepted | None:
        """After a crash mid-attempt: the provider's record of this message, None if it has none; CannotTell."""

    def hook_routes(self, hooks: HookContext) -> list[BaseRoute]:
        """Routes under /v1.0/hooks/<provider>/{account_id}; a forged or stale signature answers 401."""
