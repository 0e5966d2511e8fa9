"""Web chat test helpers: a web chat account, visitor sessions, and an SSE reader for the visitor stream."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx

from convhub.v1 import account_pb2, account_service_pb2


def create_webchat_account(accounts: Any, name: str = "site chat") -> account_pb2.Account:
    """A web chat account through gRPC CreateAccount (`accounts`: a tenant-bound AccountService stub)."""
    request = account_service_pb2.CreateAccountRequest(
        account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_WEBCHAT, name=name)
    )
    return accounts.CreateAccount(request)


@dataclass
class Session:
    token: str
    visitor_id: str
    conversation_id: str
    status: int

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def open_session(http: httpx.Client, widget_key: str, returning: str | None = None) -> Session:
    body: dict[str, str] = {"widget_key": widget_key}
    if returning:
        body["visitor_token"] = returning
    response = http.post("/v1.0/webchat/sessions", json=body)
    assert response.status_code in (200, 201), response.text
    data = response.json()
    return Session(data["visitor_token"], data["visitor_id"], data["conversation_id"], response.status_code)


def post_text(http: httpx.Client, session: Session, text: str) -> httpx.Response:
    return http.post("/v1.0/webchat/messages", json={"text": text}, headers=session.auth)


def start_chat(http: httpx.Client, widget_key: str, text: str) -> Session:
    """A new visitor's session after their first message: its token names the conversation that message opened."""
    session = open_session(http, widget_key)
    assert session.conversation_id == ""
    response = post_text(http, session, text)
    assert response.status_code == 201, response.text
    body = response.json()
    return Session(body["visitor_token"], body["visitor_id"], body["conversation_id"], response.status_code)


@dataclass
class SseFrame:
    id: str
    event: str
    data: dict[str, Any]


@dataclass
class VisitorStream:
    """Reads `GET /v1.0/webchat/events` in a thread; frames arrive on `frames` (closed by `close`)."""

    base_url: str
    token: str
    headers: dict[str, str] = field(default_factory=dict)
    frames: queue.Queue[SseFrame] = field(default_factory=queue.Queue)
    status: int = 0

    def __post_init__(self) -> None:
        self._opened = threading.Event()
        self._socket: socket.socket | None = None
        self._client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(30, read=60))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._opened.wait(15), "the stream did not answer"

    def _run(self) -> None:
        frame: dict[str, str] = {}
        try:
            with self._client.stream(
                "GET", "/v1.0/webchat/events", params={"visitor_token": self.token}, headers=self.headers
            ) as response:
                self.status = response.status_code
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                self._opened.set()
                if response.status_code != 200:
                    return
                for line in response.iter_lines():
                    if not line:
                        if "data" in frame:
                            data = json.loads(frame["data"])
                            self.frames.put(SseFrame(frame.get("id", ""), frame.get("event", ""), data))
                        frame = {}
                        continue
                    if line.startswith(":"):
                        continue
                    key, _, value = line.partition(":")
                    frame[key] = value.removeprefix(" ")
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by close()
        finally:
            self._opened.set()

    def take(self, count: int, timeout: float = 15) -> list[SseFrame]:
        got = []
        for _ in range(count):
            got.append(self.frames.get(timeout=timeout))
        return got

    def quiet(self, seconds: float) -> list[SseFrame]:
        """Whatever arrives within `seconds` (to show that nothing does)."""
        got = []
        try:
            while True:
                got.append(self.frames.get(timeout=seconds))
        except queue.Empty:
            return got

    def close(self) -> None:
        # Closing the client does not wake the thread blocked reading the stream (it would wait for the
        # server's next keep-alive); shutting the socket down does.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(timeout=10)
