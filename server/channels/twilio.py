"""Twilio Programmable Messaging (SMS/MMS): send, find an earlier send, inbound and status-callback hooks.

Wire formats are Twilio's own:
- send: `POST {api}/2010-04-01/Accounts/{AccountSid}/Messages.json`, HTTP basic
  auth `AccountSid:AuthToken`, form fields `To`, `From`, `Body`, `MediaUrl`
  (repeated), `StatusCallback`; 201 with the Message resource (`sid`,
  `status`), errors as `{"code", "message", "status"}`.
- find_sent: `GET` the same list filtered by `To`, `From` and `DateSent>=`,
  matching the body (Twilio has no idempotency key).
- hooks: form-encoded POSTs signed with `X-Twilio-Signature`: base64
  HMAC-SHA1, keyed with the Auth Token, over the URL Twilio called
  (CONVHUB_PUBLIC_URL + path + query) followed by every POST parameter name
  and value, sorted by name. Answered with an empty TwiML `<Response/>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

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
from convhub.server.domain.messages import Media
from convhub.server.errors import ApiError
from convhub.server.services.ingest import InboundMessage
from convhub.server.store.media_files import MediaFiles

SIGNATURE_HEADER = "x-twilio-signature"
FORM = "application/x-www-form-urlencoded"
TWIML_EMPTY = b'<?xml version="1.0" encoding="UTF-8"?><Response/>'
MAX_MEDIA = 10  # Twilio sends at most 10 media per message
FIND_PAGES = 5  # pages of 50 looked at by find_sent before it gives up (CannotTell)

# Twilio message status -> our delivery status.
DELIVERY_STATUS = {
    "accepted": "queued",
    "scheduled": "queued",
    "queued": "queued",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "undelivered",
    "failed": "failed",
    "canceled": "failed",
}


def compute_signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's signature: base64 HMAC-SHA1 over the URL and the sorted POST parameters (name then value)."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given and with the scheme's default port added or removed (Twilio signs either way)."""
    parts = urlsplit(url)
    default = "443" if parts.scheme == "https" else "80"
    if parts.port is None:
        other = parts._replace(netloc=f"{parts.netloc}:{default}")
    elif str(parts.port) == default:
        other = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0])
    else:
        return [url]
    return [url, urlunsplit(other)]


def signature_valid(auth_token: str, url: str, params: Sequence[tuple[str, str]], signature: str) -> bool:
    return any(
        hmac.compare_digest(compute_signature(auth_token, variant, params), signature) for variant in _url_variants(url)
    )


def _media_type(mime_type: str) -> str:
    top = mime_type.split("/", 1)[0]
    return top if top in ("image", "video", "audio") else "file"


def _status_callback_path(account_id: str) -> str:
    return f"/v1.0/hooks/twilio/{account_id}/status"


class TwilioAdapter:
    provider = "twilio"
    channel = "message"

    def __init__(self, api_url: str, media: MediaFiles | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        # MMS media (MediaUrlN) is fetched into `media` with the account's credentials; None keeps the links.
        self.fetcher = MediaFetcher(media, provider="Twilio", auth_origin=self.api_url) if media is not None else None

    # --- outbound ---------------------------------------------------------

    def _credentials(self, account: ChannelAccount) -> tuple[str, str]:
        return (
            provider_http.credential(account, "account_sid", "Twilio"),
            provider_http.credential(account, "auth_token", "Twilio"),
        )

    async def send(self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound) -> Accepted:
        sid, token = self._credentials(account)
        form: list[tuple[str, str]] = [("To", outbound.recipient.target), ("From", outbound.sender.target)]
        if outbound.text:
            form.append(("Body", outbound.text))
        form.extend(("MediaUrl", media["url"]) for media in outbound.medias)
        if outbound.status_callback_url:
            form.append(("StatusCallback", outbound.status_callback_url))
        url = f"{self.api_url}/2010-04-01/Accounts/{sid}/Messages.json"
        response = await provider_http.request(
            http,
            "POST",
            url,
            provider="Twilio",
            content=urlencode(form),
            headers={"content-type": FORM},
            auth=(sid, token),
        )
        if response.status_code in (200, 201):
            body = provider_http.json_object(response)
            provider_id = str(body.get("sid") or "")
            if not provider_id:
                raise SendFailed("bad_response", "Twilio accepted the message without a sid", retryable=False)
            return Accepted(provider_id, DELIVERY_STATUS.get(str(body.get("status")), "sent"))
        raise _failure(response)

    async def find_sent(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, since_us: int
    ) -> Accepted | None:
        """Twilio's record of this message: same To, From and body, created at or after the attempt began."""
        try:
            sid, token = self._credentials(account)
        except SendFailed:
            raise CannotTell("no credentials") from None
        # A day early: DateSent filters by whole days, and clocks differ.
        since = datetime.fromtimestamp(since_us / 1_000_000 - 86_400, UTC)
        params: dict[str, str] | None = {
            "To": outbound.recipient.target,
            "From": outbound.sender.target,
            "DateSent>": since.strftime("%Y-%m-%d"),
            "PageSize": "50",
        }
        url = f"{self.api_url}/2010-04-01/Accounts/{sid}/Messages.json"
        for _ in range(FIND_PAGES):
            try:
                response = await http.get(url, params=params, auth=(sid, token))
            except httpx.HTTPError as exc:
                raise CannotTell(f"cannot list Twilio messages: {type(exc).__name__}") from None
            if response.status_code != 200:
                raise CannotTell(f"listing Twilio messages answered {response.status_code}")
            page = provider_http.json_object(response)
            for item in page.get("messages") or []:
                if _is_attempt(item, outbound, since_us):
                    return Accepted(str(item["sid"]), DELIVERY_STATUS.get(str(item.get("status")), "sent"))
            next_uri = page.get("next_page_uri")
            if not next_uri:
                return None
            url, params = f"{self.api_url}{next_uri}", None
        raise CannotTell(f"no match in the first {FIND_PAGES} pages of Twilio messages")

    # --- inbound ----------------------------------------------------------

    def hook_routes(self, hooks: HookContext) -> list[BaseRoute]:
        async def inbound(request: Request) -> Response:
            try:
                account, params = await self._verified(request, hooks)
                message = parse_inbound(account, params)
            except hook_rules.HookRejected as rejected:
                return rejected.response
            names = [f"MediaUrl{i}" for i in range(len(message.medias))]
            auth = (account.credentials.get("account_sid", ""), account.credentials.get("auth_token", ""))
            try:
                await ingest_keeping_media(hooks, self.fetcher, account, message, names, auth)
            except ApiError as exc:
                return hook_rules.api_error_response(exc)
            return Response(TWIML_EMPTY, media_type="text/xml")

        async def status(request: Request) -> Response:
            try:
                account, params = await self._verified(request, hooks)
                receipt = parse_status(account, params)
            except hook_rules.HookRejected as rejected:
                return rejected.response
            await hooks.receipt(receipt)
            return Response(TWIML_EMPTY, media_type="text/xml")

        return [
            # Relative: the HTTP app mounts hook routes under /v1.0/hooks.
            Route("/twilio/{account_id}", inbound, methods=["POST"]),
            Route("/twilio/{account_id}/status", status, methods=["POST"]),
        ]

    async def _verified(self, request: Request, hooks: HookContext) -> tuple[ChannelAccount, list[tuple[str, str]]]:
        """The account and form parameters of a request Twilio signed; HookRejected (404, 400, 401) otherwise."""
        account = await hook_rules.account_for(hooks, self.provider, request.path_params["account_id"])
        body = await hook_rules.read_body(request)
        content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type != FORM:
            raise hook_rules.malformed("body", "must be application/x-www-form-urlencoded")
        try:
            params = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise hook_rules.malformed("body", "is not a valid form encoding") from None
        signature = request.headers.get(SIGNATURE_HEADER, "")
        token = account.credentials.get("auth_token", "")
        if not signature:
            raise hook_rules.unauthenticated("missing X-Twilio-Signature")
        url = hooks.public_url + request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not token or not signature_valid(token, url, params, signature):
            raise hook_rules.unauthenticated("X-Twilio-Signature does not match")
        return account, params


def parse_inbound(account: ChannelAccount, params: Sequence[tuple[str, str]]) -> InboundMessage:
    """Twilio's inbound message fields -> the shared ingest command; 400 naming the missing or bad field."""
    form = _single_values(params)
    for name in ("MessageSid", "From", "To"):
        if not form.get(name):
            raise hook_rules.malformed(name, "is required")
    raw_count = form.get("NumMedia", "0") or "0"
    if not raw_count.isdigit() or int(raw_count) > MAX_MEDIA:
        raise hook_rules.malformed("NumMedia", f"must be a whole number from 0 to {MAX_MEDIA}")
    medias: list[Media] = []
    for i in range(int(raw_count)):
        url = form.get(f"MediaUrl{i}", "")
        if not url:
            raise hook_rules.malformed(f"MediaUrl{i}", "is required when NumMedia is larger")
        mime_type = form.get(f"MediaContentType{i}", "")
        medias.append({"type": _media_type(mime_type), "url": url, "mime_type": mime_type, "filename": "", "size": 0})
    return InboundMessage(
        customer_id=account.customer_id,
        peer=Address("tel", form["From"]),
        account_id=account.id,
        self_address=Address("tel", form["To"]),
        text=form.get("Body", ""),
        medias=medias,
        provider_message_id=form["MessageSid"],
    )


def parse_status(account: ChannelAccount, params: Sequence[tuple[str, str]]) -> Receipt:
    form = _single_values(params)
    sid = form.get("MessageSid") or form.get("SmsSid") or ""
    if not sid:
        raise hook_rules.malformed("MessageSid", "is required")
    raw_status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if raw_status not in DELIVERY_STATUS:
        raise hook_rules.malformed("MessageStatus", f"unknown status {raw_status[:32]!r}")
    return Receipt(
        account_id=account.id,
        provider_message_id=sid,
        delivery_status=DELIVERY_STATUS[raw_status],
        error_code=form.get("ErrorCode", ""),
        error_message=form.get("ErrorMessage", ""),
    )


def status_callback_url(public_url: str, account_id: str) -> str:
    """Where Twilio should post this account's delivery receipts."""
    return public_url + _status_callback_path(account_id)


def _single_values(params: Sequence[tuple[str, str]]) -> Mapping[str, str]:
    return dict(params)


def _failure(response: httpx.Response) -> SendFailed:
    """Twilio's error `code` and `message` kept; whether to retry is provider_http's one rule."""
    body = provider_http.json_object(response)
    code = str(body.get("code") or response.status_code)
    message = str(body.get("message") or response.reason_phrase or "error")
    return provider_http.failure(response, code, message)


def _is_attempt(item: Mapping[str, Any], outbound: Outbound, since_us: int) -> bool:
    """A listed message is this attempt's: same body, created no earlier than a minute before the attempt."""
    if not item.get("sid") or (item.get("body") or "") != outbound.text:
        return False
    created = item.get("date_created")
    if not created:
        return True
    try:
        created_us = parsedate_to_datetime(str(created)).timestamp() * 1_000_000
    except (TypeError, ValueError):
        return True
    return created_us >= since_us - 60_000_000
