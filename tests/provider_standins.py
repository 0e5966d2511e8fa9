"""Loopback stand-ins for the Telnyx and LINE APIs: real HTTP servers, as strict as the real ones where it matters.

Each checks the bearer token and the required fields the way the provider
documents them, records what it accepted, and can be told to fail the next
requests (any status, a `Retry-After`, an answer that never comes, or one
that comes only after the client gave up, having accepted the message).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
HEX_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Scripted:
    """One scripted answer: `status`/`body`/`headers`; `hang` never answers; `accept_then_hang` does the
    work (the message counts as sent) and then answers too late."""

    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    accept_then_hang: bool = False


class StandIn:
    """Shared machinery: scripted failures per path prefix, and a record of every request."""

    def __init__(self) -> None:
        self.script: dict[str, list[Scripted]] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []

    def fail_next(self, path_prefix: str, *answers: Scripted) -> None:
        self.script.setdefault(path_prefix, []).extend(answers)

    def _scripted(self, path: str) -> Scripted | None:
        for prefix, queue in self.script.items():
            if path.startswith(prefix) and queue:
                return queue.pop(0)
        return None

    async def _record(self, request: Request) -> tuple[bytes, Scripted | None]:
        body = await request.body()
        self.requests.append((request.method, request.url.path, dict(request.headers), body))
        return body, self._scripted(request.url.path)

    def calls(self, path_prefix: str) -> list[tuple[str, str, dict[str, str], bytes]]:
        return [r for r in self.requests if r[1].startswith(path_prefix)]


async def hang() -> None:
    """Never answer (until the server shuts down, which ends the wait quietly)."""
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(3600)


async def _answer_scripted(scripted: Scripted) -> Response:
    if scripted.hang:
        await hang()
    return JSONResponse(scripted.body if scripted.body is not None else {}, scripted.status, scripted.headers)


class TelnyxStandIn(StandIn):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.messages: dict[str, dict[str, Any]] = {}

    def _error(self, status: int, code: str, title: str, detail: str, pointer: str = "") -> JSONResponse:
        error: dict[str, Any] = {"code": code, "title": title, "detail": detail}
        if pointer:
            error["source"] = {"pointer": pointer}
        return JSONResponse({"errors": [error]}, status)

    async def send(self, request: Request) -> Response:
        body, scripted = await self._record(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "10009", "Authentication failed", "The API key is missing or invalid.")
        if scripted is not None and not scripted.accept_then_hang:
            return await _answer_scripted(scripted)
        try:
            payload = json.loads(body)
        except ValueError:
            return self._error(400, "10015", "Bad Request", "The request body is not valid JSON.")
        for name in ("from", "to"):
            if not isinstance(payload.get(name), str) or not E164.match(payload[name]):
                return self._error(
                    422,
                    "40310",
                    "Invalid 'to' address" if name == "to" else "Invalid source",
                    f"The '{name}' address must be E.164.",
                    f"/{name}",
                )
        if not payload.get("text") and not payload.get("media_urls"):
            return self._error(422, "40005", "Invalid message body", "text or media_urls is required.", "/text")
        message_id = str(uuid.uuid4())
        record = {
            "record_type": "message",
            "id": message_id,
            "direction": "outbound",
            "type": "MMS" if payload.get("media_urls") else "SMS",
            "from": {"phone_number": payload["from"]},
            "to": [{"phone_number": payload["to"], "status": "queued"}],
            "text": payload.get("text", ""),
            "media": [{"url": u} for u in payload.get("media_urls", [])],
            "webhook_url": payload.get("webhook_url"),
            "errors": [],
        }
        self.messages[message_id] = record
        if scripted is not None:  # accepted, but the answer comes after the client gave up
            await hang()
        return JSONResponse({"data": record})

    async def get_message(self, request: Request) -> Response:
        _, scripted = await self._record(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return self._error(401, "10009", "Authentication failed", "The API key is missing or invalid.")
        if scripted is not None:
            return await _answer_scripted(scripted)
        record = self.messages.get(request.path_params["message_id"])
        if record is None:
            return self._error(404, "10005", "Resource not found", "The requested resource was not found.")
        return JSONResponse({"data": record})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v2/messages", self.send, methods=["POST"]),
            Route("/v2/messages/{message_id}", self.get_message, methods=["GET"]),
        ]


class LineStandIn(StandIn):
    """The Messaging API (`api.line.me`) and the content API (`api-data.line.me`) on one server."""

    def __init__(self, access_token: str) -> None:
        super().__init__()
        self.access_token = access_token
        self.profiles: dict[str, str] = {}  # userId -> displayName
        self.contents: dict[str, tuple[bytes, str]] = {}  # messageId -> (bytes, content type)
        self.reply_tokens: set[str] = set()  # valid, unused
        self.delivered: list[dict[str, Any]] = []  # every accepted reply or push body
        self.retry_keys: dict[str, str] = {}  # accepted retry key -> request id

    def _authorized(self, request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {self.access_token}"

    @staticmethod
    def _error(status: int, message: str, details: list[dict[str, str]] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"message": message}
        if details:
            body["details"] = details
        return JSONResponse(body, status)

    @staticmethod
    def _messages_invalid(payload: dict[str, Any]) -> JSONResponse | None:
        messages = payload.get("messages")
        if not isinstance(messages, list) or not 1 <= len(messages) <= 5:
            return LineStandIn._error(
                400,
                "The request body has 1 error(s)",
                [{"message": "Size must be between 1 and 5", "property": "messages"}],
            )
        for i, m in enumerate(messages):
            if m.get("type") == "text" and not (isinstance(m.get("text"), str) and 0 < len(m["text"]) <= 5000):
                return LineStandIn._error(
                    400,
                    "The request body has 1 error(s)",
                    [{"message": "Length must be between 1 and 5000", "property": f"messages[{i}].text"}],
                )
            if m.get("type") == "image" and not str(m.get("originalContentUrl", "")).startswith("https://"):
                return LineStandIn._error(
                    400,
                    "The request body has 1 error(s)",
                    [{"message": "Must be a valid HTTPS URL", "property": f"messages[{i}].originalContentUrl"}],
                )
        return None

    def _sent(self, payload: dict[str, Any]) -> list[dict[str, str]]:
        self.delivered.append(payload)
        return [
            {"id": str(100000 + len(self.delivered) * 10 + i), "quoteToken": "q"}
            for i in range(len(payload["messages"]))
        ]

    async def push(self, request: Request) -> Response:
        body, scripted = await self._record(request)
        if not self._authorized(request):
            return self._error(
                401, "Authentication failed. Confirm that the access token in the authorization header is valid."
            )
        key = request.headers.get("x-line-retry-key")
        if key is not None and not HEX_UUID.match(key):
            return self._error(400, "The value of the X-Line-Retry-Key header is invalid")
        if key is not None and key in self.retry_keys:
            return JSONResponse(
                {
                    "message": "The retry key is already accepted",
                    "sentMessages": [{"id": self.retry_keys[key], "quoteToken": "q"}],
                },
                409,
                {"x-line-accepted-request-id": f"req-{self.retry_keys[key]}"},
            )
        if scripted is not None and not scripted.accept_then_hang:
            return await _answer_scripted(scripted)
        payload = json.loads(body)
        if not isinstance(payload.get("to"), str) or not payload["to"]:
            return self._error(
                400, "The request body has 1 error(s)", [{"message": "May not be empty", "property": "to"}]
            )
        invalid = self._messages_invalid(payload)
        if invalid is not None:
            return invalid
        sent = self._sent(payload)
        if key is not None:
            self.retry_keys[key] = sent[0]["id"]
        if scripted is not None:
            await hang()
        return JSONResponse({"sentMessages": sent}, headers={"x-line-request-id": "req-push"})

    async def reply(self, request: Request) -> Response:
        body, scripted = await self._record(request)
        if not self._authorized(request):
            return self._error(401, "Authentication failed.")
        if request.headers.get("x-line-retry-key") is not None:
            return self._error(400, "X-Line-Retry-Key is not supported by this endpoint")
        if scripted is not None:
            return await _answer_scripted(scripted)
        payload = json.loads(body)
        token = payload.get("replyToken")
        if token not in self.reply_tokens:
            return self._error(400, "Invalid reply token")
        invalid = self._messages_invalid(payload)
        if invalid is not None:
            return invalid
        self.reply_tokens.discard(token)  # usable once
        return JSONResponse({"sentMessages": self._sent(payload)})

    async def profile(self, request: Request) -> Response:
        _, scripted = await self._record(request)
        if not self._authorized(request):
            return self._error(401, "Authentication failed.")
        if scripted is not None:
            return await _answer_scripted(scripted)
        user_id = request.path_params["user_id"]
        name = self.profiles.get(user_id)
        if name is None:
            return self._error(404, "Not found")
        return JSONResponse(
            {
                "displayName": name,
                "userId": user_id,
                "language": "en",
                "pictureUrl": "https://profile.line-scdn.net/x",
                "statusMessage": "",
            }
        )

    async def content(self, request: Request) -> Response:
        _, scripted = await self._record(request)
        if not self._authorized(request):
            return self._error(401, "Authentication failed.")
        if scripted is not None:
            return await _answer_scripted(scripted)
        found = self.contents.get(request.path_params["message_id"])
        if found is None:
            return self._error(404, "Not found")
        return Response(found[0], media_type=found[1])

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v2/bot/message/push", self.push, methods=["POST"]),
            Route("/v2/bot/message/reply", self.reply, methods=["POST"]),
            Route("/v2/bot/profile/{user_id}", self.profile, methods=["GET"]),
            Route("/v2/bot/message/{message_id}/content", self.content, methods=["GET"]),
        ]


@contextlib.asynccontextmanager
async def serve(routes: list[BaseRoute] | Callable[[str], list[BaseRoute]]) -> AsyncIterator[str]:
    """Serve `routes` (or the routes made for the base URL) on a free loopback port in this event loop."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    app = Starlette(routes=routes(base_url) if callable(routes) else routes)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield base_url
    finally:
        server.should_exit = True
        server.force_exit = True  # hanging handlers must not hold the test up
        await asyncio.wait_for(task, 10)
        sock.close()
