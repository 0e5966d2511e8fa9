"""Telnyx Messaging (SMS/MMS): send, look up an earlier send, and the signed event hook.

Wire formats are Telnyx's own (API v2):
- send: `POST {api}/v2/messages`, `Authorization: Bearer <api_key>`, JSON
  `from`, `to`, `text`, `media_urls`, `webhook_url`; 200 with
  `{"data": {"id", "to": [{"status"}]}}`. Errors are
  `{"errors": [{"code", "title", "detail"}]}`.
- find_sent: `GET {api}/v2/messages/{id}`, only when an id is known: Telnyx
  has neither an idempotency key nor a message search, so otherwise it
  cannot tell (and the worker fails the message rather than risk a double text).
- hook (`/v1.0/hooks/telnyx/{account_id}`): one JSON endpoint for every event (`message.received`,
  `message.sent`, `message.finalized`), signed with Ed25519:
  `telnyx-signature-ed25519` is the base64 signature of
  `"{telnyx-timestamp}|{raw body}"` under the account's `public_key`
  credential (base64, from the Mission Control portal). A timestamp more than
  five minutes away from our clock is refused, so a captured request cannot
  be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Sequence
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from convhub.server.channels import hook_payloads as fields
from convhub.server.channels import hooks as hook_rules
from convhub.server.channels import provider_http
from convhub.server.channels.adapter import (
    Accepted,
    CannotTell,
    ChannelAccount,
    HookContext,
    Outbound,
    Receipt,
    SendFailed,
)
from convhub.server.channels.media_fetch import MediaFetcher, ingest_keeping_media
from convhub.server.domain.addresses import Address
from convhub.server.domain.messages import MAX_TEXT, Media, media_kind
from convhub.server.errors import ApiError
from convhub.server.services.ingest import InboundMessage
from convhub.server.store.media_files import MediaFiles

PROVIDER = "telnyx"
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TIMESTAMP_TOLERANCE = 300  # seconds either way, as Telnyx's own SDKs allow
MAX_MEDIA = 10
OK_BODY = b'{"status":"ok"}'

# Telnyx's per-recipient status -> our delivery status (anything else is ignored: Telnyx may add states).
DELIVERY_STATUS = {
    "queued": "queued",
    "sending": "sent",
    "sent": "sent",
    "delivery_unconfirmed": "sent",  # left Telnyx, but the carrier gave no receipt
    "delivered": "delivered",
    "delivery_failed": "undelivered",  # the carrier reported it undelivered
    "sending_failed": "failed",
    "expired": "failed",
}
RECEIPT_EVENTS = frozenset({"message.sent", "message.finalized"})


def signature_valid(public_key_b64: str, timestamp: str, body: bytes, signature_b64: str) -> bool:
    """Telnyx's Ed25519 signature over `timestamp|body`; False for a malformed key or signature too."""
    # Imported on the first hook, not at start: cryptography is ~7 MB resident (see store/secrets.py).
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), timestamp.encode("ascii") + b"|" + body)
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def timestamp_fresh(timestamp: str, now: float) -> bool:
    return timestamp.isdigit() and abs(now - int(timestamp)) <= TIMESTAMP_TOLERANCE


class TelnyxAdapter:
    provider = PROVIDER
    channel = "message"

    def __init__(self, api_url: str, media: MediaFiles | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        # MMS media (`media[].url`, signed links that expire) is fetched into `media`; None keeps the links.
        self.fetcher = MediaFetcher(media, provider="Telnyx") if media is not None else None

    # --- outbound ---------------------------------------------------------

    async def send(self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound) -> Accepted:
        body: dict[str, Any] = {"from": outbound.sender.target, "to": outbound.recipient.target}
        if outbound.text:
            body["text"] = outbound.text
        if outbound.medias:
            body["media_urls"] = [media["url"] for media in outbound.medias]
        if outbound.status_callback_url:
            body["webhook_url"] = outbound.status_callback_url
        response = await provider_http.request(
            http,
            "POST",
            f"{self.api_url}/v2/messages",
            provider="Telnyx",
            json=body,
            headers={"Authorization": f"Bearer {provider_http.credential(account, 'api_key', 'Telnyx')}"},
        )
        if response.status_code in (200, 201, 202):
            data = provider_http.json_object(response).get("data")
            message_id = str(data.get("id") or "") if isinstance(data, dict) else ""
            if not message_id:
                raise SendFailed("bad_response", "Telnyx accepted the message without an id", retryable=False)
            assert isinstance(data, dict)
            return Accepted(message_id, _recipient_status(data) or "queued")
        raise _failure(response)

    async def find_sent(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, since_us: int
    ) -> Accepted | None:
        """Telnyx's record of the message with a known id; CannotTell without one (Telnyx cannot be searched)."""
        if not outbound.provider_message_id:
            raise CannotTell("Telnyx has no idempotency key and no message search; no message id is known")
        try:
            key = provider_http.credential(account, "api_key", "Telnyx")
        except SendFailed:
            raise CannotTell("the account has no Telnyx api_key") from None
        try:
            response = await http.get(
                f"{self.api_url}/v2/messages/{outbound.provider_message_id}",
                headers={"Authorization": f"Bearer {key}"},
            )
        except httpx.HTTPError as exc:
            raise CannotTell(f"cannot reach Telnyx: {type(exc).__name__}") from None
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CannotTell(f"Telnyx answered {response.status_code} for the message")
        data = provider_http.json_object(response).get("data")
        if not isinstance(data, dict):
            raise CannotTell("Telnyx answered without a message record")
        return Accepted(outbound.provider_message_id, _recipient_status(data) or "queued")

    # --- inbound ----------------------------------------------------------

    def hook_routes(self, hooks: HookContext) -> list[BaseRoute]:
        async def events(request: Request) -> Response:
            try:
                account, body = await _verified(request, hooks)
                event = parse_event(account, fields.json_object(body))
            except hook_rules.HookRejected as rejected:
                return rejected.response
            try:
                if isinstance(event, InboundMessage):  # a redelivered message id answers the first message
                    names = [f"data.payload.media[{i}].url" for i in range(len(event.medias))]
                    await ingest_keeping_media(hooks, self.fetcher, account, event, names)
                elif isinstance(event, Receipt):
                    await hooks.receipt(event)
            except ApiError as exc:
                return hook_rules.api_error_response(exc)
            return Response(OK_BODY, media_type="application/json")

        # Mounted under /v1.0/hooks. Receipts arrive on the messaging profile's URL or on the
        # `webhook_url` a send named (the worker names `.../status`): both take every event type.
        return [
            Route("/telnyx/{account_id}", events, methods=["POST"]),
            Route("/telnyx/{account_id}/status", events, methods=["POST"]),
        ]


async def _verified(request: Request, hooks: HookContext) -> tuple[ChannelAccount, bytes]:
    """The account and raw body of a request Telnyx signed recently; HookRejected (404, 401, 413) otherwise."""
    account = await hook_rules.account_for(hooks, PROVIDER, request.path_params["account_id"])
    body = await hook_rules.read_body(request)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    if not signature or not timestamp:
        raise hook_rules.unauthenticated(f"missing {SIGNATURE_HEADER} or {TIMESTAMP_HEADER}")
    if not timestamp_fresh(timestamp, time.time()):
        raise hook_rules.unauthenticated(f"{TIMESTAMP_HEADER} is more than {TIMESTAMP_TOLERANCE} s from now")
    public_key = account.credentials.get("public_key", "")
    if not public_key or not signature_valid(public_key, timestamp, body, signature):
        raise hook_rules.unauthenticated(f"{SIGNATURE_HEADER} does not match")
    return account, body


def parse_event(account: ChannelAccount, body: dict[str, Any]) -> InboundMessage | Receipt | None:
    """A Telnyx event -> an inbound message, a receipt, or None (an event type we do not use)."""
    data = fields.child(body, "data", "data")
    event_type = fields.string(data, "event_type", "data.event_type")
    if event_type == "message.received":
        return parse_inbound(account, fields.child(data, "payload", "data.payload"))
    if event_type in RECEIPT_EVENTS:
        return parse_receipt(account, fields.child(data, "payload", "data.payload"))
    return None


def parse_inbound(account: ChannelAccount, payload: dict[str, Any]) -> InboundMessage:
    path = "data.payload"
    sender = fields.child(payload, "from", f"{path}.from")
    recipients = fields.items(payload, "to", f"{path}.to")
    if not recipients:
        raise hook_rules.malformed(f"{path}.to", "must name our number")
    to = fields.element(recipients[0], f"{path}.to[0]")
    raw_media = fields.items(payload, "media", f"{path}.media", required=False)
    if len(raw_media) > MAX_MEDIA:
        raise hook_rules.malformed(f"{path}.media", f"at most {MAX_MEDIA} items")
    medias: list[Media] = []
    for i, item in enumerate(raw_media):
        media = fields.element(item, f"{path}.media[{i}]")
        mime_type = fields.string(media, "content_type", f"{path}.media[{i}].content_type", required=False)
        size = fields.number(media, "size", f"{path}.media[{i}].size", required=False)
        medias.append(
            {
                "type": media_kind(mime_type),
                "url": fields.string(media, "url", f"{path}.media[{i}].url"),
                "mime_type": mime_type,
                "filename": "",
                "size": int(size) if size is not None and size >= 0 else 0,
            }
        )
    return InboundMessage(
        customer_id=account.customer_id,
        peer=Address("tel", fields.string(sender, "phone_number", f"{path}.from.phone_number")),
        account_id=account.id,
        self_address=Address("tel", fields.string(to, "phone_number", f"{path}.to[0].phone_number")),
        text=fields.string(payload, "text", f"{path}.text", required=False, max_length=MAX_TEXT),
        subject=fields.string(payload, "subject", f"{path}.subject", required=False, max_length=998),
        medias=medias,
        provider_message_id=fields.string(payload, "id", f"{path}.id", max_length=255),
    )


def parse_receipt(account: ChannelAccount, payload: dict[str, Any]) -> Receipt | None:
    path = "data.payload"
    message_id = fields.string(payload, "id", f"{path}.id", max_length=255)
    recipients = fields.items(payload, "to", f"{path}.to")
    if not recipients:
        raise hook_rules.malformed(f"{path}.to", "must name the recipient")
    to = fields.element(recipients[0], f"{path}.to[0]")
    status = DELIVERY_STATUS.get(fields.string(to, "status", f"{path}.to[0].status"))
    if status is None:
        return None  # a state Telnyx added after this was written: nothing we can report
    code, message = "", ""
    errors = fields.items(payload, "errors", f"{path}.errors", required=False)
    if errors:
        first = fields.element(errors[0], f"{path}.errors[0]")
        code = _error_code(first)
        message = _error_message(first)
    return Receipt(account.id, message_id, status, code, message)


def _recipient_status(data: dict[str, Any]) -> str:
    recipients = data.get("to")
    if isinstance(recipients, list) and recipients and isinstance(recipients[0], dict):
        return DELIVERY_STATUS.get(str(recipients[0].get("status") or ""), "")
    return ""


def _failure(response: httpx.Response) -> SendFailed:
    """Telnyx's first error (code, title: detail); the status decides whether it is worth retrying."""
    errors = provider_http.json_object(response).get("errors")
    first: dict[str, Any] = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
    code = _error_code(first) or str(response.status_code)
    message = _error_message(first) or response.reason_phrase or "error"
    return provider_http.failure(response, code, message)


def _error_code(error: dict[str, Any]) -> str:
    return str(error.get("code") or "")[:64]


def _error_message(error: dict[str, Any]) -> str:
    parts: Sequence[str] = [str(error[k]) for k in ("title", "detail") if error.get(k)]
    return ": ".join(parts)[:1000]
