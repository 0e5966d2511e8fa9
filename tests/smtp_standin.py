"""A real SMTP server (aiosmtpd) on loopback standing in for a customer's mail provider.

It runs its own event loop in a thread, so both async adapter tests and a
`convhub serve` subprocess can send to it. It records each accepted message
(envelope and raw bytes), requires AUTH with the credentials it was given
(over plain TCP: loopback only), and can be told to answer the next RCPT or
DATA with any SMTP reply (4xx, 5xx).
"""

from __future__ import annotations

import asyncio
import email.policy
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

USERNAME = "mailer@example.test"
PASSWORD = "app-password-123"


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=email.policy.default).parsebytes(self.raw)
        assert isinstance(parsed, EmailMessage)
        return parsed


class SmtpStandIn:
    def __init__(self, username: str = USERNAME, password: str = PASSWORD) -> None:
        self.username = username
        self.password = password
        self.received: list[Received] = []
        self.logins: list[str] = []
        self.rcpt_replies: list[str] = []
        self.data_replies: list[str] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    # --- aiosmtpd hooks ---------------------------------------------------

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        with self._lock:
            scripted = self.rcpt_replies.pop(0) if self.rcpt_replies else None
        if scripted:
            return scripted
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            scripted = self.data_replies.pop(0) if self.data_replies else None
            if scripted:
                return scripted
            raw = envelope.original_content or envelope.content
            assert isinstance(raw, bytes)
            self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), raw))
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login.decode(), data.password.decode()) == (
            self.username,
            self.password,
        )
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

    # --- lifecycle --------------------------------------------------------

    def start(self) -> SmtpStandIn:
        self._thread.start()

        async def listen() -> int:
            self._server = await self._loop.create_server(
                lambda: SMTP(
                    self,
                    authenticator=self._authenticate,
                    auth_required=True,
                    auth_require_tls=False,  # loopback only; the adapter is told `tls: none`
                    data_size_limit=64 << 20,
                ),
                host="127.0.0.1",
                port=0,
            )
            return int(self._server.sockets[0].getsockname()[1])

        self.port = asyncio.run_coroutine_threadsafe(listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def credentials(self, **extra: str) -> dict[str, str]:
        """An smtp account's credentials pointing at this stand-in."""
        return {
            "host": "127.0.0.1",
            "port": str(self.port),
            "tls": "none",
            "username": self.username,
            "password": self.password,
            **extra,
        }

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        with self._lock:
            return list(self.received)
