"""The doorbell across processes on PostgreSQL: writers NOTIFY, every process LISTENs and rings its Doorbell.

A transaction that appended events sends a notification on `convhub_events`
inside itself (`notify_events_written`, called by the outbox); PostgreSQL
delivers it only if that transaction commits. Each process runs one
`NotifyListener` worker on a dedicated async connection that rings the
process's `Doorbell` for every notification, so consumers in replica A wake
for what replica B wrote. The payload names the writing process's doorbell,
and a listener skips its own: that commit rang the doorbell when its
connection was checked in, and a second ring would cost every consumer a
second, empty read per commit. A ring still only means "look at the table":
consumers re-poll on a timer, so a notification lost while the listener
reconnects costs latency, never an event; the listener also rings once after
every (re)connect for what it may have missed. SQLite has one process: the
in-process ring is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from typing import TYPE_CHECKING

from sqlalchemy import URL, Connection, make_url, text

from convhub.server.store.doorbell import Doorbell, doorbell_token

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("convhub.doorbell")

EVENTS_CHANNEL = "convhub_events"

_NOTIFY = text(f"SELECT pg_notify('{EVENTS_CHANNEL}', :token)")
_NOTIFIED_IN = "convhub.notified_in"


def notify_events_written(conn: Connection) -> None:
    """NOTIFY every listening process, once per transaction; PostgreSQL delivers it on commit only."""
    if conn.dialect.name != "postgresql":
        return
    transaction = conn.get_transaction()
    notified: weakref.ref[object] | None = conn.info.get(_NOTIFIED_IN)
    if transaction is not None and notified is not None and notified() is transaction:
        return
    conn.execute(_NOTIFY, {"token": doorbell_token(conn)})
    if transaction is not None:
        conn.info[_NOTIFIED_IN] = weakref.ref(transaction)


def libpq_conninfo(url: str | URL) -> str:
    """A libpq connection string for a SQLAlchemy `postgresql+psycopg://` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class NotifyListener:
    """Worker: LISTEN on a dedicated connection and ring `doorbell` per notification; reconnects with backoff.

    Nothing here blocks the loop: psycopg's async connection, a bounded
    connect, and a liveness probe every `probe_interval` seconds without
    notifications, so a connection that died silently is noticed.
    """

    name = "doorbell-listener"

    def __init__(
        self,
        url: str | URL,
        doorbell: Doorbell,
        *,
        connect_timeout: float = 5.0,
        probe_interval: float = 30.0,
        min_backoff: float = 0.1,
        max_backoff: float = 10.0,
    ) -> None:
        self._conninfo = libpq_conninfo(url)
        self._doorbell = doorbell
        self._connect_timeout = connect_timeout
        self._probe_interval = probe_interval
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._task: asyncio.Task[None] | None = None
        # Besides cancelling: on Python 3.11 a cancel that meets a finishing asyncio.wait_for inside a
        # library call can be swallowed; the loops then still end at their next turn.
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._stopping = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        import psycopg  # here, not at the top: the outbox imports this module on SQLite too

        backoff = self._min_backoff
        while not self._stopping:
            try:
                async with asyncio.timeout(self._connect_timeout):
                    conn = await psycopg.AsyncConnection.connect(
                        self._conninfo,
                        autocommit=True,
                        connect_timeout=max(1, round(self._connect_timeout)),
                        application_name="convhub-doorbell",
                    )
                async with conn:
                    await conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    log.debug("listening on %s", EVENTS_CHANNEL)
                    backoff = self._min_backoff
                    self._doorbell.ring()  # notifications sent while we were not listening are lost
                    await self._listen(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.warning("doorbell listener: %s; reconnecting in %.1fs", _describe(exc), backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _listen(self, conn: psycopg.AsyncConnection[object]) -> None:
        while not self._stopping:
            async for notify in conn.notifies(timeout=self._probe_interval):
                if notify.payload != self._doorbell.token:  # our own commits rang when they were checked in
                    self._doorbell.ring()
            async with asyncio.timeout(self._connect_timeout):  # quiet for a while: is the connection alive?
                await conn.execute("SELECT 1")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "database did not answer in time"
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'connection lost'}"
