"""LINE Messaging API: the signed webhook (with profile names and media content), reply and push.

Inbound (`POST /v1.0/hooks/line/{account_id}`):
- verified with `X-Line-Signature`: base64 HMAC-SHA256 of the raw body keyed
  with the account's `channel_secret`; forged or missing answers 401;
- parsed whole first (line_events.py: a malformed body answers 400 naming
  the field, nothing stored), then each kept event is ingested with its
  `webhookEventId` as provider message id, so a redelivery stores nothing new;
- the sender's display name comes from the profile API
  (`GET {api}/v2/bot/profile/{userId}`) once per person and process (cached;
  a failure only leaves the name empty);
- image, video, audio and file content is fetched from
  `GET {data_api}/v2/bot/message/{id}/content` into the media directory
  (store/media_files.py) and kept as a media item whose URL is
  `{CONVHUB_PUBLIC_URL}/v1.0/media/{id}`. Content LINE will not give (or past
  the size bounds) keeps the media item with an empty URL: the message is
  never lost for it;
- the event's `replyToken` is stored with the message for the delivery worker.

Outbound:
- with a reply token: `POST {api}/v2/bot/message/reply`. A reply has no retry
  key, so an answer LINE did not confirm (timeout after sending, 5xx) is a
  final `outcome_unknown` rather than a possible double; an expired or used
  token (400 "Invalid reply token") falls through to push at once;
- otherwise `POST {api}/v2/bot/message/push` with `X-Line-Retry-Key`, a UUID
  derived from the job id: every attempt of one delivery carries the same
  key, so retries are safe, and a 409 means an earlier attempt was accepted.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections import OrderedDict
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from convhub.server.channels import hook_payloads as fields
from convhub.server.channels import hooks as hook_rules
from convhub.server.channels import line_events, provider_http
from convhub.server.channels.adapter import (
    Accepted,
    CannotTell,
    ChannelAccount,
    HookContext,
    Outbound,
    SendFailed,
)
from convhub.server.domain.addresses import Address
from convhub.server.domain.messages import Media
from convhub.server.errors import ApiError
from convhub.server.services.ingest import InboundMessage, Ingested
from convhub.server.store.media_files import MediaFiles, MediaRefused

log = logging.getLogger("convhub.channels.line")

PROVIDER = "line"
SIGNATURE_HEADER = "x-line-signature"
RETRY_KEY_HEADER = "X-Line-Retry-Key"
# Retry keys are uuid5(this, job id): stable across attempts, and no two jobs share one.
RETRY_KEY_NAMESPACE = uuid.UUID("5d0d7c52-3c59-4a43-9a4e-1f0b5b8f6c1e")
MAX_MESSAGES = 5  # LINE takes at most five message objects per reply or push
MAX_TEXT = 5000  # characters per LINE text message
PROFILE_TIMEOUT = 3.0  # seconds: a slow profile API only costs the name, never the message
CONTENT_TIMEOUT = 20.0
PROFILE_TTL = 86_400.0  # a name found is kept a day
PROFILE_RETRY = 300.0  # a lookup that failed is not repeated for five minutes
PROFILE_CACHE_SIZE = 10_000
FETCH_CONCURRENCY = 8  # profile and content calls at once per webhook
OK_BODY = b"{}"


def signature_valid(channel_secret: str, body: bytes, signature: str) -> bool:
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), signature.encode("latin-1", "replace"))


def retry_key(job_id: str) -> str:
    """The X-Line-Retry-Key of every attempt of one delivery (a hexadecimal UUID, as LINE requires)."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, job_id))


class _Profiles:
    """Display names by (account, user), kept a day; failed lookups are not repeated for a while."""

    def __init__(self) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()

    def get(self, key: tuple[str, str]) -> str | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: tuple[str, str], name: str, ttl: float) -> None:
        self._entries[key] = (time.monotonic() + ttl, name)
        self._entries.move_to_end(key)
        while len(self._entries) > PROFILE_CACHE_SIZE:
            self._entries.popitem(last=False)


class LineAdapter:
    provider = PROVIDER
    channel = "line"

    def __init__(self, api_url: str, data_api_url: str, media: MediaFiles) -> None:
        self.api_url = api_url.rstrip("/")
        self.data_api_url = data_api_url.rstrip("/")
        self.media = media
        self._profiles = _Profiles()
        self._lookups: dict[tuple[str, str], asyncio.Future[str]] = {}

    # --- outbound ---------------------------------------------------------

    async def send(self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound) -> Accepted:
        token = provider_http.credential(account, "channel_access_token", "LINE")
        messages = line_messages(outbound)
        if outbound.reply_token:
            accepted = await self._reply(http, token, outbound, messages)
            if accepted is not None:
                return accepted
        return await self._push(http, token, outbound, messages)

    async def _reply(
        self, http: httpx.AsyncClient, token: str, outbound: Outbound, messages: list[dict[str, Any]]
    ) -> Accepted | None:
        """The reply's acceptance; None when the token is spent or expired (push instead)."""
        try:
            response = await http.post(
                f"{self.api_url}/v2/bot/message/reply",
                json={"replyToken": outbound.reply_token, "messages": messages},
                headers={"Authorization": f"Bearer {token}"},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never reached LINE: safe to try again
            raise SendFailed("unreachable", f"cannot reach LINE: {type(exc).__name__}", retryable=True) from None
        except httpx.HTTPError as exc:
            raise _reply_unknown(f"no answer ({type(exc).__name__})") from None
        if response.status_code == 200:
            return Accepted(_sent_message_id(response, outbound), "sent")
        code, message = _error(response)
        if response.status_code == 400 and "reply token" in message.lower():
            return None
        if response.status_code >= 500:
            raise _reply_unknown(f"{response.status_code} {message}")
        raise _classified(response, code, message)

    async def _push(
        self, http: httpx.AsyncClient, token: str, outbound: Outbound, messages: list[dict[str, Any]]
    ) -> Accepted:
        response = await provider_http.request(
            http,
            "POST",
            f"{self.api_url}/v2/bot/message/push",
            provider="LINE",
            json={"to": outbound.recipient.target, "messages": messages},
            headers={"Authorization": f"Bearer {token}", RETRY_KEY_HEADER: retry_key(outbound.job_id)},
        )
        if response.status_code in (200, 409):  # 409: an earlier attempt with this retry key was accepted
            return Accepted(_sent_message_id(response, outbound), "sent")
        code, message = _error(response)
        raise _classified(response, code, message)

    async def find_sent(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, since_us: int
    ) -> Accepted | None:
        """After an interrupted attempt: a push may simply go again (its retry key makes LINE drop a repeat,
        answering 409), so there is nothing to find; a reply cannot be looked up, so CannotTell."""
        if outbound.reply_token:
            raise CannotTell("LINE cannot say whether a reply was sent, and a reply has no retry key")
        return None

    # --- inbound ----------------------------------------------------------

    def hook_routes(self, hooks: HookContext) -> list[BaseRoute]:
        async def webhook(request: Request) -> Response:
            try:
                account, body = await _verified(request, hooks)
                parsed = line_events.parse_body(fields.json_object(body))
            except hook_rules.HookRejected as rejected:
                return rejected.response
            if not parsed.events:  # the console's "Verify" button sends none
                return Response(OK_BODY, media_type="application/json")
            return await self._ingest_all(hooks, account, parsed)

        return [Route("/line/{account_id}", webhook, methods=["POST"])]  # mounted under /v1.0/hooks

    async def _ingest_all(self, hooks: HookContext, account: ChannelAccount, body: line_events.LineBody) -> Response:
        """Enrich every event (names, content), then ingest them together (one group commit)."""
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)
        prepared = await asyncio.gather(*(self._inbound(hooks, account, body, event, limit) for event in body.events))
        outcomes = await asyncio.gather(*(hooks.ingest.ingest(item) for item, _ in prepared), return_exceptions=True)
        failure: BaseException | None = None
        for (_, stored), outcome in zip(prepared, outcomes, strict=True):
            if isinstance(outcome, BaseException) or (isinstance(outcome, Ingested) and outcome.duplicate):
                await self._drop_media(account.customer_id, stored)  # nothing refers to them
            if isinstance(outcome, BaseException) and failure is None:
                failure = outcome
        if isinstance(failure, ApiError):
            return hook_rules.api_error_response(failure)
        if failure is not None:
            raise failure  # a database fault: 5xx, and LINE redelivers (if enabled) without a double
        return Response(OK_BODY, media_type="application/json")

    async def _inbound(
        self,
        hooks: HookContext,
        account: ChannelAccount,
        body: line_events.LineBody,
        event: line_events.LineEvent,
        limit: asyncio.Semaphore,
    ) -> tuple[InboundMessage, list[str]]:
        """The ingest command for one event, and the ids of the media files stored for it."""
        async with limit:
            name = await self._display_name(hooks.http, account, event) if event.source_type == "user" else ""
            medias: list[Media] = list(event.medias)
            stored: list[str] = []
            if event.content is not None:
                media, media_id = await self._content(hooks, account, event.content)
                medias.append(media)
                if media_id:
                    stored.append(media_id)
        self_address = None
        if account.address is None and body.destination:
            self_address = Address("line", body.destination)
        message = InboundMessage(
            customer_id=account.customer_id,
            peer=Address("line", event.peer, name),
            account_id=account.id,
            self_address=self_address,
            text=event.text,
            medias=medias,
            provider_message_id=event.event_id,
            reply_token=event.reply_token,
        )
        return message, stored

    async def _display_name(
        self, http: httpx.AsyncClient, account: ChannelAccount, event: line_events.LineEvent
    ) -> str:
        """The user's display name: cached, or joined to a lookup already under way, or looked up now."""
        key = (account.id, event.user_id)
        cached = self._profiles.get(key)
        if cached is not None:
            return cached
        pending = self._lookups.get(key)
        if pending is None:
            pending = self._lookups[key] = asyncio.ensure_future(self._lookup_name(http, account, key))
            pending.add_done_callback(lambda _: self._lookups.pop(key, None))
        return await asyncio.shield(pending)

    async def _lookup_name(self, http: httpx.AsyncClient, account: ChannelAccount, key: tuple[str, str]) -> str:
        token = account.credentials.get("channel_access_token", "")
        name = ""
        try:
            response = await http.get(
                f"{self.api_url}/v2/bot/profile/{key[1]}",
                headers={"Authorization": f"Bearer {token}"},
                timeout=PROFILE_TIMEOUT,
            )
            if response.status_code == 200:
                value = provider_http.json_object(response).get("displayName")
                name = value[:255] if isinstance(value, str) else ""
        except httpx.HTTPError as exc:
            log.info("LINE profile lookup failed: %s", type(exc).__name__)
        self._profiles.put(key, name, PROFILE_TTL if name else PROFILE_RETRY)
        return name

    async def _content(
        self, hooks: HookContext, account: ChannelAccount, content: line_events.Content
    ) -> tuple[Media, str]:
        """The media item for message content, and the id of the file stored for it ("" when none)."""
        media: Media = {
            "type": content.kind,
            "url": content.url,
            "mime_type": "",
            "filename": content.filename,
            "size": content.size,
        }
        if content.url:  # the sender's app named an external URL: nothing to fetch
            return media, ""
        fetched = await self._fetch_content(hooks.http, account, content)
        if fetched is None:
            return media, ""
        data, mime_type = fetched
        try:
            stored = await asyncio.to_thread(self.media.save, account.customer_id, data, mime_type)
        except (MediaRefused, OSError) as exc:
            log.warning("LINE content not kept: %s", exc)
            return {**media, "mime_type": mime_type, "size": len(data)}, ""
        url = f"{hooks.public_url}/v1.0/media/{stored.id}"
        return {**media, "url": url, "mime_type": stored.mime_type, "size": stored.size}, stored.id

    async def _fetch_content(
        self, http: httpx.AsyncClient, account: ChannelAccount, content: line_events.Content
    ) -> tuple[bytes, str] | None:
        token = account.credentials.get("channel_access_token", "")
        url = f"{self.data_api_url}/v2/bot/message/{content.message_id}/content"
        try:
            async with http.stream(
                "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=CONTENT_TIMEOUT
            ) as response:
                if response.status_code != 200:
                    log.info("LINE content %s answered %d", content.message_id, response.status_code)
                    return None
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.media.max_item_bytes:
                        log.warning("LINE content %s is larger than %d bytes", content.message_id, size)
                        return None
                    chunks.append(chunk)
                mime_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
                return b"".join(chunks), mime_type or line_events.CONTENT_MIME[content.kind]
        except httpx.HTTPError as exc:
            log.info("LINE content %s not fetched: %s", content.message_id, type(exc).__name__)
            return None

    async def _drop_media(self, customer_id: str, media_ids: list[str]) -> None:
        for media_id in media_ids:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.media.remove, customer_id, media_id)


async def _verified(request: Request, hooks: HookContext) -> tuple[ChannelAccount, bytes]:
    """The account and raw body of a request LINE signed; HookRejected (404, 401, 413) otherwise."""
    account = await hook_rules.account_for(hooks, PROVIDER, request.path_params["account_id"])
    body = await hook_rules.read_body(request)
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not signature:
        raise hook_rules.unauthenticated("missing X-Line-Signature")
    secret = account.credentials.get("channel_secret", "")
    if not secret or not signature_valid(secret, body, signature):
        raise hook_rules.unauthenticated("X-Line-Signature does not match")
    return account, body


def line_messages(outbound: Outbound) -> list[dict[str, Any]]:
    """LINE message objects: the text (in 5,000-character parts, other media as links), then images."""
    lines = [outbound.text] if outbound.text else []
    images: list[dict[str, Any]] = []
    for media in outbound.medias:
        url = media["url"]
        if media["type"] == "image" and url.startswith("https://"):  # LINE fetches images over HTTPS only
            images.append({"type": "image", "originalContentUrl": url, "previewImageUrl": url})
        else:
            lines.append(f"{media['filename'] or media['type'] or 'file'}: {url}")
    text = "\n".join(lines)
    messages: list[dict[str, Any]] = [
        {"type": "text", "text": text[i : i + MAX_TEXT]} for i in range(0, len(text), MAX_TEXT)
    ]
    messages.extend(images)
    if not messages:
        raise SendFailed("empty_message", "nothing to send", retryable=False)
    if len(messages) > MAX_MESSAGES:
        raise SendFailed(
            "too_many_parts",
            f"LINE takes at most {MAX_MESSAGES} messages per send; this one needs {len(messages)}",
            retryable=False,
        )
    return messages


def _sent_message_id(response: httpx.Response, outbound: Outbound) -> str:
    """The id convhub records for the delivery (unique per message, so never empty): LINE's first sent
    message id, else the accepted (409) or this request's id, else the retry key (unique per job)."""
    sent = provider_http.json_object(response).get("sentMessages")
    if isinstance(sent, list) and sent and isinstance(sent[0], dict) and sent[0].get("id"):
        return str(sent[0]["id"])
    for header in ("x-line-accepted-request-id", "x-line-request-id"):
        if response.headers.get(header):
            return response.headers[header]
    return retry_key(outbound.job_id)


def _error(response: httpx.Response) -> tuple[str, str]:
    """LINE's error: the HTTP status as code, `message` plus each detail's `property: message`."""
    body = provider_http.json_object(response)
    message = str(body.get("message") or response.reason_phrase or "error")
    details = body.get("details")
    if isinstance(details, list):
        extra = [f"{d.get('property', '')}: {d.get('message', '')}".strip(": ") for d in details if isinstance(d, dict)]
        if extra:
            message = f"{message} ({'; '.join(extra)})"
    return str(response.status_code), message[:1000]


def _classified(response: httpx.Response, code: str, message: str) -> SendFailed:
    """provider_http's rule, except LINE's monthly quota: a 429 that no retry within days would cure."""
    if response.status_code == 429 and "monthly limit" in message.lower():
        return SendFailed(code, message, retryable=False)
    return provider_http.failure(response, code, message)


def _reply_unknown(why: str) -> SendFailed:
    return SendFailed(
        "outcome_unknown",
        f"LINE did not confirm the reply ({why}); a reply has no retry key, so it is not sent again",
        retryable=False,
    )
