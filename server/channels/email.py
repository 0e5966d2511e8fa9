"""Email over SMTP (provider `smtp`, channel `email`): send with aiosmtplib, receive raw RFC 5322 messages.

Account credentials (write-only, sealed; VoIPBIN's `secret` is `password`,
`token` is `username`, `provider_data` carries the rest):
`host`, `port` (default 587, 465 with implicit TLS), `tls` (`starttls`
(default: required), `tls` (implicit), `none`), `username`, `password`,
`from` (default: the account's address), `reply_to` ("" = the From address,
`plus` = a per-conversation `local+c<id>@domain` address, or a fixed
address), `hook_secret` (authenticates the inbound hook and signs unsubscribe links).

Outbound: text and HTML alternatives, the message's medias as attachments
(our media store's `/v1.0/media/{id}` items read from disk, other http(s)
URLs fetched, both bounded by the media item size), a `Message-ID` derived
from the delivery job (the same on every retry of the job) that becomes the
message's provider id, `In-Reply-To`/`References` to the conversation's
last email, and `List-Unsubscribe` (RFC 8058 one-click). SMTP 4xx and
connection errors are retried; 5xx are final. SMTP has no lookup, so an
interrupted attempt cannot be confirmed (`find_sent` raises CannotTell).

Inbound (`receive`), shared by the hook (`POST /v1.0/hooks/email/{account_id}`,
header `X-Convhub-Hook-Secret`) and the built-in SMTP receiver
(channels/smtp_receiver.py): a bounce marks our message failed through the
receipt path; a message from a person is ingested with its Message-ID as
provider id (a redelivery stores nothing) and its attachments in the media
store (one past the item limit refuses the whole message: 413 / SMTP 552).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib
import httpx
from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

from convhub.server.channels import email_mime
from convhub.server.channels import hooks as hook_rules
from convhub.server.channels.adapter import (
    Accepted,
    CannotTell,
    ChannelAccount,
    HookContext,
    Outbound,
    Receipt,
    SendFailed,
)
from convhub.server.domain.addresses import Address
from convhub.server.domain.messages import MAX_TEXT, Media, media_kind
from convhub.server.errors import ApiError
from convhub.server.services.email_threads import EmailThreads
from convhub.server.services.ingest import InboundMessage
from convhub.server.store.email_threads import Thread
from convhub.server.store.media_files import MediaFiles, MediaRefused

log = logging.getLogger("convhub.channels.email")

PROVIDER = "smtp"
CHANNEL = "email"
HOOK_SECRET_HEADER = "x-convhub-hook-secret"
MESSAGE_ID_NAMESPACE = uuid.UUID("0b8f6e3e-6a4e-4f0c-9d1e-7c1a2f5e9b47")
DEFAULT_SUBJECT = "Message"
MAX_SUBJECT = 998
TLS_MODES = ("starttls", "tls", "none")
OK_BODY = b'{"status":"ok"}'
_MEDIA_URL = re.compile(r"/v1\.0/media/(?P<id>[0-9a-fA-F-]{36})$")


# (customer id, email address): records that the address opted out of email (services/opt_outs.py).
OptOut = Callable[[str, str], Awaitable[None]]


class TooLarge(Exception):
    """An attachment is larger than one media item may be: the whole message is refused."""


class Unreadable(Exception):
    """The bytes are not an email we can read."""


@dataclass(frozen=True, slots=True)
class Received:
    """What `receive` did: `kind` is ingested | duplicate | bounce | ignored."""

    kind: str
    message_id: str = ""
    conversation_id: str = ""


def unsubscribe_signature(hook_secret: str, account_id: str, address: str) -> str:
    mac = hmac.new(hook_secret.encode("utf-8"), f"unsubscribe\n{account_id}\n{address}".encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def reply_subject(subject: str) -> str:
    return subject if not subject or subject.lower().startswith("re:") else f"Re: {subject}"


class EmailAdapter:
    provider = PROVIDER
    channel = CHANNEL

    def __init__(
        self,
        media: MediaFiles,
        threads: EmailThreads | None,
        *,
        public_url: str,
        timeout: float,
        opt_out: OptOut | None = None,
    ) -> None:
        self.media = media
        self.threads = threads
        self.public_url = public_url.rstrip("/")
        self.timeout = timeout
        self.opt_out = opt_out  # None until services/opt_outs.py exists (the `people` work): unsubscribe answers 501

    # --- outbound ---------------------------------------------------------

    async def send(self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound) -> Accepted:
        creds = account.credentials
        host = creds.get("host", "")
        if not host:
            raise SendFailed("no_credentials", "the account has no SMTP host", retryable=False)
        tls = creds.get("tls", "starttls") or "starttls"
        if tls not in TLS_MODES:
            raise SendFailed("bad_credentials", f"tls must be one of {', '.join(TLS_MODES)}", retryable=False)
        try:
            port = int(creds.get("port") or (465 if tls == "tls" else 587))
        except ValueError:
            raise SendFailed("bad_credentials", "port is not a number", retryable=False) from None
        sender = creds.get("from") or (account.address.target if account.address else outbound.sender.target)
        if "@" not in sender:
            raise SendFailed("no_credentials", "the account has no from address", retryable=False)
        msg = await self.compose(http, account, outbound, sender)
        try:
            await aiosmtplib.send(
                msg,
                sender=sender,
                recipients=[outbound.recipient.target],
                hostname=host,
                port=port,
                username=creds.get("username") or None,
                password=creds.get("password") or None,
                use_tls=tls == "tls",
                start_tls=tls == "starttls",  # required, not opportunistic: credentials never go in clear
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            code = first.code if first is not None else 550
            raise _smtp_failure(code, first.message if first is not None else "recipient refused") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _smtp_failure(exc.code, exc.message) from None
        except (aiosmtplib.SMTPException, OSError) as exc:  # connect errors, timeouts, disconnects
            raise SendFailed("unreachable", f"SMTP: {type(exc).__name__}: {exc}"[:1000], retryable=True) from None
        return Accepted(email_mime.normal_message_id(str(msg["Message-ID"])), "sent")

    async def compose(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, sender: str
    ) -> EmailMessage:
        """The MIME message for one attempt (the same Message-ID for every attempt of a job)."""
        thread = Thread()
        if self.threads is not None and outbound.conversation_id:
            thread = await asyncio.to_thread(self.threads.thread_of, outbound.conversation_id)
        domain = sender.rpartition("@")[2]
        reply_to = account.credentials.get("reply_to", "")
        if reply_to == "plus":
            reply_to = email_mime.plus_address(sender, outbound.conversation_id)
        unsubscribe = ""
        secret = account.credentials.get("hook_secret", "")
        if secret:
            target = outbound.recipient.target
            token = base64.urlsafe_b64encode(target.encode("utf-8")).decode("ascii").rstrip("=")
            unsubscribe = (
                f"{self.public_url}/v1.0/hooks/email/{account.id}/unsubscribe"
                f"?a={token}&s={unsubscribe_signature(secret, account.id, target)}"
            )
        return email_mime.build(
            email_mime.OutboundEmail(
                sender=sender,
                sender_name=outbound.sender.name or (account.address.name if account.address else ""),
                recipient=outbound.recipient.target,
                recipient_name=outbound.recipient.name,
                subject=(outbound.subject or reply_subject(thread.subject) or DEFAULT_SUBJECT)[:MAX_SUBJECT],
                text=outbound.text,
                message_id=f"{uuid.uuid5(MESSAGE_ID_NAMESPACE, outbound.job_id)}@{domain}",
                reply_to=reply_to or sender,
                in_reply_to=thread.in_reply_to,
                references=list(thread.references),
                unsubscribe_url=unsubscribe,
                attachments=[await self._attachment(http, account, media) for media in outbound.medias],
            )
        )

    async def _attachment(
        self, http: httpx.AsyncClient, account: ChannelAccount, media: Media
    ) -> email_mime.Attachment:
        """A media item's bytes: from our media store, or fetched; bounded by the media item size."""
        url = media.get("url", "")
        name = media.get("filename") or url.rstrip("/").rpartition("/")[2] or "attachment"
        ours = _MEDIA_URL.search(url.split("?", 1)[0])
        if ours is not None and url.startswith(self.public_url):
            found = await asyncio.to_thread(self.media.find, account.customer_id, ours.group("id"))
            if found is None:
                raise SendFailed("attachment_missing", f"media {ours.group('id')} is not stored", retryable=False)
            data = await asyncio.to_thread(found.path.read_bytes)
            return email_mime.Attachment(media.get("filename") or name, media.get("mime_type") or found.mime_type, data)
        if not url.startswith(("https://", "http://")):
            raise SendFailed("attachment_unavailable", f"cannot attach {url[:100]!r}", retryable=False)
        try:
            async with http.stream("GET", url) as response:
                if response.status_code != 200:
                    raise SendFailed(
                        "attachment_unavailable",
                        f"{url[:200]} answered {response.status_code}",
                        retryable=response.status_code >= 500 or response.status_code == 429,
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.media.max_item_bytes:
                        raise SendFailed(
                            "attachment_too_large", f"larger than {self.media.max_item_bytes} bytes", retryable=False
                        )
                    chunks.append(chunk)
                mime = media.get("mime_type") or response.headers.get("content-type", "").split(";")[0].strip()
        except httpx.HTTPError as exc:
            raise SendFailed("attachment_unavailable", f"{url[:200]}: {type(exc).__name__}", retryable=True) from None
        return email_mime.Attachment(name, mime or "application/octet-stream", b"".join(chunks))

    async def find_sent(
        self, http: httpx.AsyncClient, account: ChannelAccount, outbound: Outbound, since_us: int
    ) -> Accepted | None:
        raise CannotTell("SMTP has no way to look up a message sent earlier")

    # --- inbound ----------------------------------------------------------

    async def receive(
        self, hooks: HookContext, account: ChannelAccount, raw: bytes, *, recipients: tuple[str, ...] = ()
    ) -> Received:
        """One raw message for `account`: a bounce to the receipt path, a person's message to ingest.

        Raises Unreadable, TooLarge (nothing stored for either) and ApiError (ingest refused it)."""
        try:
            parsed = await asyncio.to_thread(email_mime.parse, raw)  # MIME decoding is CPU work: off the loop
        except email_mime.NotAnEmail as exc:
            raise Unreadable(str(exc)) from None
        except Exception as exc:  # the stdlib parser is lenient, but a header may still not decode
            raise Unreadable(f"cannot parse the message: {type(exc).__name__}") from None
        if parsed is None:
            return Received("ignored")
        if isinstance(parsed, email_mime.Bounce):
            status = "delivered" if parsed.delivered else "failed"
            for original in parsed.original_message_ids:
                sent_on = account.id
                if self.threads is not None:  # the bounce may reach another of the customer's mailboxes
                    found = await asyncio.to_thread(self.threads.sending_account, account.customer_id, original)
                    sent_on = found or account.id
                await hooks.receipt(Receipt(sent_on, original, status, parsed.status[:64], parsed.diagnostic))
            return Received("bounce", parsed.original_message_ids[0] if parsed.original_message_ids else "")
        for item in parsed.attachments:
            if len(item.data) > self.media.max_item_bytes:
                raise TooLarge(f"attachment {item.filename!r} is larger than {self.media.max_item_bytes} bytes")
        thread = await asyncio.to_thread(self._thread_conversation, account, parsed, recipients)
        stored: list[str] = []
        medias: list[Media] = []
        try:
            for item in parsed.attachments:
                media, media_id = await self._store(hooks, account, item)
                medias.append(media)
                if media_id:
                    stored.append(media_id)
            own = email_mime.split_plus_address(recipients[0] if recipients else next(iter(parsed.recipients), ""))[0]
            message_id = parsed.message_id or "sha256:" + hashlib.sha256(raw).hexdigest()
            ingested = await hooks.ingest.ingest(
                InboundMessage(
                    customer_id=account.customer_id,
                    peer=Address("email", parsed.sender, parsed.sender_name[:255]),
                    account_id=account.id,
                    self_address=None if account.address is not None or not own else Address("email", own),
                    text=parsed.text[:MAX_TEXT],
                    subject=parsed.subject[:MAX_SUBJECT],
                    medias=medias,
                    provider_message_id=message_id,
                    thread_conversation_id=thread,
                )
            )
        except BaseException:
            await self._drop(account.customer_id, stored)
            raise
        if ingested.duplicate:
            await self._drop(account.customer_id, stored)
            return Received("duplicate", ingested.message.id, ingested.conversation.id)
        return Received("ingested", ingested.message.id, ingested.conversation.id)

    def _thread_conversation(
        self, account: ChannelAccount, parsed: email_mime.InboundEmail, recipients: tuple[str, ...]
    ) -> str | None:
        """The conversation a reply continues: a message named by In-Reply-To/References, else the plus-address."""
        if self.threads is None:
            return None
        found = self.threads.conversation_of(account.customer_id, parsed.thread_ids)
        if found is not None:
            return found
        for address in (*recipients, *parsed.recipients):
            conversation = email_mime.split_plus_address(address)[1]
            if conversation and self.threads.conversation_exists(account.customer_id, conversation):
                return conversation
        return None

    async def _store(
        self, hooks: HookContext, account: ChannelAccount, item: email_mime.Attachment
    ) -> tuple[Media, str]:
        media: Media = {
            "type": media_kind(item.mime_type),
            "url": "",
            "mime_type": item.mime_type,
            "filename": item.filename[:255],
            "size": len(item.data),
        }
        try:
            stored = await asyncio.to_thread(self.media.save, account.customer_id, item.data, item.mime_type)
        except (MediaRefused, OSError) as exc:  # the directory is full: the message keeps the item without bytes
            log.warning("email attachment not kept: %s", exc)
            return media, ""
        return {**media, "url": f"{hooks.public_url}/v1.0/media/{stored.id}", "mime_type": stored.mime_type}, stored.id

    async def _drop(self, customer_id: str, media_ids: list[str]) -> None:
        for media_id in media_ids:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.media.remove, customer_id, media_id)

    def hook_routes(self, hooks: HookContext) -> list[BaseRoute]:
        limit = max(hook_rules.MAX_HOOK_BODY, self.media.max_item_bytes * 2 + hook_rules.MAX_HOOK_BODY)

        async def inbound(request: Request) -> Response:
            try:
                account = await hook_rules.account_for(hooks, PROVIDER, request.path_params["account_id"])
                secret = account.credentials.get("hook_secret", "")
                given = request.headers.get(HOOK_SECRET_HEADER, "")
                if (
                    not secret
                    or not given
                    or not hmac.compare_digest(secret.encode(), given.encode("utf-8", "replace"))
                ):
                    raise hook_rules.unauthenticated(f"missing or wrong {HOOK_SECRET_HEADER}")
                raw = await hook_rules.read_body(request, limit)
                received = await self.receive(hooks, account, raw)
            except hook_rules.HookRejected as rejected:
                return rejected.response
            except Unreadable as exc:
                return hook_rules.malformed("body", str(exc)).response
            except TooLarge as exc:
                return Response(str(exc).encode(), status_code=413, media_type="text/plain")
            except ApiError as exc:
                return hook_rules.api_error_response(exc)
            return Response(
                f'{{"status":"{received.kind}","message_id":"{received.message_id}"}}'.encode(),
                media_type="application/json",
            )

        async def unsubscribe(request: Request) -> Response:
            return await self._unsubscribe(hooks, request)

        return [
            Route("/email/{account_id}", inbound, methods=["POST"]),
            Route("/email/{account_id}/unsubscribe", unsubscribe, methods=["GET", "POST"]),
        ]

    async def _unsubscribe(self, hooks: HookContext, request: Request) -> Response:
        """RFC 8058: POST (`List-Unsubscribe=One-Click`) opts the signed address out; GET shows a confirm button
        (mail scanners follow GET links, so GET never changes anything)."""
        try:
            account = await hook_rules.account_for(hooks, PROVIDER, request.path_params["account_id"])
        except hook_rules.HookRejected as rejected:
            return rejected.response
        token = request.query_params.get("a", "")
        signature = request.query_params.get("s", "")
        try:
            address = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            address = ""
        secret = account.credentials.get("hook_secret", "")
        expected = unsubscribe_signature(secret, account.id, address) if secret and address else ""
        if not expected or not hmac.compare_digest(expected, signature):
            return hook_rules.error_response(code_pb2.UNAUTHENTICATED, "the unsubscribe link is not valid")
        if request.method == "GET":
            return HTMLResponse(_CONFIRM_PAGE, headers={"Content-Security-Policy": "default-src 'none'"})
        if self.opt_out is None:
            return hook_rules.error_response(code_pb2.UNIMPLEMENTED, "opt-outs are not available")
        await self.opt_out(account.customer_id, address)
        return Response(b"You are unsubscribed.", media_type="text/plain")


_CONFIRM_PAGE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head><body>'
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form></body></html>'
)


def _smtp_failure(code: int, message: str) -> SendFailed:
    """4xx: the server asks us to try later; 5xx: it refuses for good."""
    return SendFailed(f"smtp_{code}", (message or "")[:1000], retryable=400 <= code < 500)
