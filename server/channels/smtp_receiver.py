"""The built-in SMTP receiver (aiosmtpd): mail for our accounts' addresses lands in conversations.

Started by `convhub serve` when `CONVHUB_SMTP_ADDRESS` (host:port) is set,
as a Worker, so it drains in the supervisor's order: on stop it accepts no
new connection, lets every message already in DATA finish (ingested or
answered), then closes idle sessions.

- RCPT TO selects the account: the live email account whose address it is
  (a `+c<conversation>` tag is ignored for the match); anyone else's
  address answers 550, so we are never an open relay.
- DATA goes through `EmailAdapter.receive`, the same path as the hook:
  an attachment past the media item limit answers 552, unreadable mail
  550, a database fault 451 (the sender's MTA tries again later; the
  Message-ID dedupe keeps that from storing twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from convhub.server.channels.adapter import ChannelAccount, HookContext
from convhub.server.channels.email import EmailAdapter, TooLarge, Unreadable
from convhub.server.channels.email_mime import split_plus_address
from convhub.server.channels.hooks import channel_account
from convhub.server.errors import ApiError
from convhub.server.services.email_threads import EmailThreads
from convhub.server.sockets import bind_tcp

log = logging.getLogger("convhub.smtp")

DRAIN_TIMEOUT = 30.0  # seconds a message in DATA may still take when the worker stops


class _Handler:
    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if self.receiver.stopping:
            return "421 4.3.2 shutting down, try again later"
        account = await self.receiver.account(address)
        if account is None:
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        task = asyncio.current_task()
        assert task is not None
        self.receiver.in_data.add(task)
        try:
            return await self.receiver.deliver(envelope)
        finally:
            self.receiver.in_data.discard(task)


class SmtpReceiver:
    name = "smtp-receiver"

    def __init__(
        self,
        address: str,
        adapter: EmailAdapter,
        hooks: HookContext,
        threads: EmailThreads,
        *,
        data_size_limit: int,
    ) -> None:
        self.address = address
        self.adapter = adapter
        self.hooks = hooks
        self.threads = threads
        self.data_size_limit = data_size_limit
        self.stopping = False
        self.in_data: set[asyncio.Task[Any]] = set()
        self.bound: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sessions: set[SMTP] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        handler = _Handler(self)

        def protocol() -> SMTP:
            session = SMTP(
                handler,
                data_size_limit=self.data_size_limit,
                enable_SMTPUTF8=True,
                hostname="convhub",
                ident="convhub ESMTP",
                timeout=60,
            )
            self._sessions.add(session)
            return session

        self._server = await loop.create_server(protocol, sock=bind_tcp(self.address))
        sockname = self._server.sockets[0].getsockname()
        self.bound = (sockname[0], sockname[1])

    async def stop(self) -> None:
        self.stopping = True
        if self._server is not None:
            self._server.close()
        if self.in_data:
            await asyncio.wait(list(self.in_data), timeout=DRAIN_TIMEOUT)
        for session in list(self._sessions):
            transport = getattr(session, "transport", None)
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()
        self._sessions.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=1.0)

    async def account(self, address: str) -> ChannelAccount | None:
        opened = self.threads.account_for(split_plus_address(address)[0])  # one indexed read, inline
        return channel_account(opened) if opened is not None and opened.provider == "smtp" else None

    async def deliver(self, envelope: Envelope) -> str:
        """Receive the message once per account named in RCPT TO; the SMTP reply for the whole message."""
        raw = envelope.original_content or envelope.content
        if not isinstance(raw, bytes):
            raw = str(raw or "").encode("utf-8")
        by_account: dict[str, tuple[ChannelAccount, list[str]]] = {}
        for rcpt in envelope.rcpt_tos:
            account = await self.account(rcpt)
            if account is not None:
                by_account.setdefault(account.id, (account, []))[1].append(rcpt)
        if not by_account:
            return "550 5.1.1 no such mailbox here"
        try:
            for account, rcpts in by_account.values():
                await self.adapter.receive(self.hooks, account, raw, recipients=tuple(rcpts))
        except TooLarge as exc:
            return f"552 5.3.4 {exc}"
        except Unreadable as exc:
            return f"550 5.6.0 {exc}"
        except ApiError as exc:
            return f"550 5.6.0 {exc.to_status().message}"[:500]
        except Exception:
            log.exception("smtp: receiving a message failed")
            return "451 4.3.0 temporary failure, try again later"
        return "250 2.0.0 OK"
