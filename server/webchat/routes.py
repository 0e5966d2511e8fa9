"""The visitor API (`/v1.0/webchat/...`) and the widget page (`/webchat/{account_id}`).

A visitor token (webchat/tokens.py) authorises exactly three things: posting
into its conversation, reading that conversation's message events, and
opening the next session. These routes accept nothing else (an API token is
401 here), and the regular API refuses visitor tokens (they are no API
token). Errors use the REST shim's JSON error shape; bad input is 400 naming
the field, a visitor posting faster than CONVHUB_WEBCHAT_RATE gets 429.

The event stream is shaped for the page: per message only its id, who sent
it (`visitor` or `agent`), its text and time; no addresses, accounts,
delivery details or other conversations. Each frame carries the event's
sequence as `id:`, so `EventSource` resumes with `Last-Event-ID`; a stream
opened without one replays the conversation from its start (the page's
history after a reload).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from google.rpc import code_pb2
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route

from convhub.server.config import Settings
from convhub.server.errors import ApiError, InvalidArgument, ResourceExhausted
from convhub.server.events.broadcaster import EventFilter, LogEntry, SubscriptionEnded
from convhub.server.events.stream import EventReader, EventsPruned, SequenceAhead
from convhub.server.gateway.errors import dumps, error_payload, http_status, simple_status
from convhub.server.services.ingest import InboundMessage, IngestService
from convhub.server.services.webchat import PROVIDER, Visitor, VisitorSession, WebchatService
from convhub.server.store import accounts, event_log
from convhub.server.store.db import Database
from convhub.server.webchat.rate_limit import TokenBuckets
from convhub.v1 import event_pb2, message_pb2

T = TypeVar("T")

API_PREFIX = "/v1.0/webchat"
PAGE_PREFIX = "/webchat"
MAX_BODY = 16_384
MAX_TEXT = 4096  # characters of one visitor message
MAX_KEY = 128
MESSAGE_EVENTS = frozenset({"conversation_message_created"})
STATIC_DIR = Path(__file__).parent / "static"
STATIC_TYPES = {"widget.js": "text/javascript; charset=utf-8", "widget.css": "text/css; charset=utf-8"}
# The page runs only our own script and talks only to us; no inline script or style, no plugins.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "content-security-policy": PAGE_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _error(exc: ApiError) -> Response:
    status = exc.to_status()
    return Response(dumps(error_payload(status)), status_code=http_status(status.code), media_type="application/json")


def _plain_error(code: int, message: str) -> Response:
    status = simple_status(code, message)
    return Response(dumps(error_payload(status)), status_code=http_status(code), media_type="application/json")


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (at most MAX_BODY bytes); INVALID_ARGUMENT naming `body` otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise InvalidArgument("body", f"larger than {MAX_BODY} bytes")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise InvalidArgument("body", f"larger than {MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("body", "not JSON") from None
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str, *, required: bool, limit: int) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidArgument(name, "is required")
        return ""
    if not isinstance(value, str):
        raise InvalidArgument(name, "must be a string")
    if len(value) > limit:
        raise InvalidArgument(name, f"longer than {limit} characters")
    return value


def _visitor_token(request: Request) -> str:
    """The visitor token: `Authorization: Bearer vt1...`, or `?visitor_token=` (EventSource sets no headers)."""
    header = request.headers.get("authorization", "")
    query = request.query_params.get("visitor_token", "")
    if header and query:
        raise InvalidArgument("visitor_token", "give the token once: header or query, not both")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise InvalidArgument("authorization", "expected 'Bearer <visitor token>'")
        return value.strip()
    return query


def _session_body(session: VisitorSession, ttl: int) -> dict[str, Any]:
    claims = session.claims
    return {
        "visitor_token": session.token,
        "visitor_id": claims.visitor_id,
        "conversation_id": claims.conversation_id,
        "expires_at": claims.expires_at,
        "expires_in": ttl,
    }


def page_message(message: message_pb2.Message) -> dict[str, Any]:
    """A message as the visitor's page sees it: nothing internal (addresses, accounts, delivery, ids of others)."""
    incoming = message.direction == message_pb2.MESSAGE_DIRECTION_INCOMING
    return {
        "id": message.id,
        "sender": "visitor" if incoming else "agent",
        "text": message.text,
        "tm_create": message.tm_create.ToJsonString(),
    }


def _frame(event: event_pb2.Event) -> bytes:
    data = json.dumps(page_message(event.message), separators=(",", ":"))  # escapes newlines: one data line
    return b"id: %d\nevent: message\ndata: %s\n\n" % (event.sequence, data.encode())


def _resume_after(request: Request) -> int:
    """Where a stream resumes: `Last-Event-ID` (EventSource's reconnect) over `?after=`; 0 = from the start."""
    header = request.headers.get("last-event-id", "").strip()
    field, value = ("Last-Event-ID", header) if header else ("after", request.query_params.get("after", "").strip())
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise InvalidArgument(field, f"must be an event id (a sequence number), got {value[:40]!r}")
    return int(value)


@dataclass
class WebchatRoutes:
    """The handlers, over the process's one IngestService (its group commit) and event broadcaster."""

    service: WebchatService
    ingest: IngestService
    reader: EventReader
    db: Database
    settings: Settings
    executor: Executor | None = None

    def __post_init__(self) -> None:
        self.buckets = TokenBuckets(burst=self.settings.webchat_burst, rate=self.settings.webchat_rate)
        self._page = (STATIC_DIR / "widget.html").read_text(encoding="utf-8")
        self._static = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_TYPES}

    async def _off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(*args))

    async def open_session(self, request: Request) -> Response:
        try:
            body = await _json_body(request)
            widget_key = _string(body, "widget_key", required=True, limit=MAX_KEY)
            returning = _string(body, "visitor_token", required=False, limit=1024)
            if not widget_key:
                raise InvalidArgument("widget_key", "must not be empty")
            session = await self._off_loop(self.service.open_session, widget_key, returning or None)
        except ApiError as exc:
            return _error(exc)
        return Response(dumps(_session_body(session, self.settings.webchat_token_ttl)), media_type="application/json")

    async def post_message(self, request: Request) -> Response:
        try:
            visitor = self.service.visitor(_visitor_token(request))  # one indexed read, inline like API reads
            body = await _json_body(request)
            text = _string(body, "text", required=True, limit=MAX_TEXT)
            if not text.strip():
                raise InvalidArgument("text", "must not be blank")
            wait = self.buckets.take(f"{visitor.account.id}/{visitor.claims.visitor_id}")
            if wait > 0:
                response = _error(ResourceExhausted("too many messages: slow down", reason="RATE_LIMITED"))
                response.headers["retry-after"] = str(max(1, round(wait + 0.5)))
                return response
            ingested = await self.ingest.ingest(
                InboundMessage(
                    customer_id=visitor.account.customer_id,
                    peer=visitor.address,
                    account_id=visitor.account.id,
                    text=text,
                )
            )
        except ApiError as exc:
            return _error(exc)
        result: dict[str, Any] = {
            "message": page_message(ingested.message),
            "conversation_id": ingested.conversation.id,
        }
        if ingested.conversation.id != visitor.claims.conversation_id:
            # The first message opened the room (or the old one had closed): the token follows the visitor there.
            session = self.service.sign(visitor.account, visitor.claims.visitor_id, ingested.conversation.id)
            result.update(_session_body(session, self.settings.webchat_token_ttl))
        return Response(dumps(result), 201, media_type="application/json")

    async def events(self, request: Request) -> Response:
        try:
            visitor = self.service.visitor(_visitor_token(request))
            after = _resume_after(request)
            customer_id = visitor.account.customer_id
            with self.db.read() as conn:
                newest = event_log.log_bounds(conn, customer_id).newest
            if after > newest:
                raise InvalidArgument("Last-Event-ID", f"{after} is beyond the newest event")
        except ApiError as exc:
            return _error(exc)
        # Before the first message the token names no conversation: "" matches no event, and the stream
        # still ends like any other when the server stops.
        event_filter = EventFilter(types=MESSAGE_EVENTS, conversation_id=visitor.claims.conversation_id)
        return StreamingResponse(
            self._stream(visitor, after, event_filter),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def _stream(self, visitor: Visitor, after: int, event_filter: EventFilter) -> AsyncIterator[bytes]:
        """Replay after `after`, then live; a keepalive comment after CONVHUB_SSE_KEEPALIVE seconds of silence.

        Ends when the visitor token expires: a token authorises reading only while it is valid, so a rotated
        signing secret or a deleted account cuts a visitor off within one token lifetime. The page then opens
        a new session and resumes after the last event it saw.
        """
        keepalive = self.settings.sse_keepalive or None
        customer_id = visitor.account.customer_id
        ends_at = time.monotonic() + (visitor.claims.expires_at - time.time())
        yield b"retry: 2000\n\n"
        while True:
            source = self.reader.subscribe(customer_id, after, event_filter)
            pending: asyncio.Future[list[LogEntry]] | None = None
            try:
                while True:
                    if pending is None:
                        pending = asyncio.ensure_future(source.__anext__())
                    left = ends_at - time.monotonic()
                    if left <= 0:
                        return
                    done, _ = await asyncio.wait({pending}, timeout=min(left, keepalive or left))
                    if not done:
                        if time.monotonic() < ends_at:
                            yield b": keepalive\n\n"
                        continue
                    batch = pending.result()
                    pending = None
                    if batch:
                        after = batch[-1].sequence
                        yield b"".join(_frame(entry.event) for entry in batch)
            except EventsPruned:
                after = 0  # replay what is kept; the page skips messages it already shows
                continue
            except (SubscriptionEnded, SequenceAhead, StopAsyncIteration):
                return  # the server is stopping (or the visitor fell behind): EventSource reconnects
            finally:
                if pending is not None and not pending.done():
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
                await source.aclose()

    async def page(self, request: Request) -> Response:
        account_id = request.path_params["account_id"]
        try:
            uuid.UUID(account_id)
        except ValueError:
            return _plain_error(code_pb2.NOT_FOUND, "no such web chat")
        with self.db.read() as conn:
            row = accounts.live_by_id(conn, account_id)
        if row is None or row.provider != PROVIDER or not row.widget_key:
            return _plain_error(code_pb2.NOT_FOUND, "no such web chat")
        body = self._page.replace("{{account_id}}", html.escape(row.id)).replace(
            "{{widget_key}}", html.escape(row.widget_key)
        )
        return Response(body, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC_TYPES:
            return _plain_error(code_pb2.NOT_FOUND, "no such file")
        headers = {"x-content-type-options": "nosniff", "cache-control": "public, max-age=300"}
        return Response(self._static[name], media_type=STATIC_TYPES[name], headers=headers)

    def mounts(self) -> list[Mount]:
        return [
            Mount(
                API_PREFIX,
                routes=[
                    Route("/sessions", self.open_session, methods=["POST"]),
                    Route("/messages", self.post_message, methods=["POST"]),
                    Route("/events", self.events, methods=["GET"]),
                ],
            ),
            Mount(
                PAGE_PREFIX,
                routes=[
                    Route("/static/{name}", self.static, methods=["GET", "HEAD"]),
                    Route("/{account_id}", self.page, methods=["GET", "HEAD"]),
                ],
            ),
        ]
