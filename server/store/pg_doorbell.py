"""The doorbell across processes on PostgreSQL: writers NOTIFY, every process LISTENs and rings its Doorbell.

Each process runs one `NotifyListener` worker on a dedicated async connection
that rings the process's `Doorbell` for every notification on
`convhub_events`, so consumers in replica A wake for what replica B wrote.
The same worker announces this process's own commits: after a commit that
wrote events it sends the notification on a second connection of its own, at
most one per `ANNOUNCE_HOLD` (commits meanwhile are announced together at the
end of the hold). A NOTIFY inside each transaction cost the writer a
statement, PostgreSQL its notification queue and every listening process a
wake-up per commit; announced after the commit, a burst of commits costs one.
A process without the worker (a CLI command) NOTIFYs inside the writing
transaction instead (`notify_events_written`, called by the outbox), which
PostgreSQL delivers only if it commits. The payload names the writing process's doorbell,
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

from convhub.server.store.doorbell import Doorbell, announced_after_commit, doorbell_token

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("convhub.doorbell")

EVENTS_CHANNEL = "convhub_events"
# After announcing a commit, how long further commits wait to be announced together (NotifyListener).
ANNOUNCE_HOLD = 0.01

_NOTIFY = text(f"SELECT pg_notify('{EVENTS_CHANNEL}', :token)")
_NOTIFIED_IN = "convhub.notified_in"


def notify_events_written(conn: Connection) -> None:
    """NOTIFY every listening process, once per transaction; PostgreSQL delivers it on commit only.

    Nothing to do where the process's NotifyListener announces commits after they happen.
    """
    if conn.dialect.name != "postgresql" or announced_after_commit(conn):
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
        # Announcing this process's commits (see the module docstring).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._announce_wanted = False  # set by any writer thread after a commit, cleared as a send starts
        self._announce_timer: asyncio.TimerHandle | None = None
        self._announcing: asyncio.Task[None] | None = None
        self._announced_at = -ANNOUNCE_HOLD
        self._sender: psycopg.AsyncConnection[object] | None = None
        self._send_failing = False
        # Besides cancelling: on Python 3.11 a cancel that meets a finishing asyncio.wait_for inside a
        # library call can be swallowed; the loops then still end at their next turn.
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=self.name)
        self._doorbell.announce_commits(self._committed)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._doorbell.announce_commits(None)  # commits from now on NOTIFY inside their transaction
        self._stopping = True
        if self._announce_timer is not None:
            self._announce_timer.cancel()
            self._announce_timer = None
        if self._announcing is not None:
            with contextlib.suppress(Exception):
                await self._announcing  # a commit waiting for its announcement gets it
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._sender is not None:
            await self._sender.close()
            self._sender = None

    async def _send_notification(self) -> bool:
        """NOTIFY on the announcing connection, connecting first if needed; False (logged once) if it failed."""
        import psycopg

        try:
            async with asyncio.timeout(self._connect_timeout):
                if self._sender is None or self._sender.closed:
                    self._sender = await psycopg.AsyncConnection.connect(
                        self._conninfo,
                        autocommit=True,
                        connect_timeout=max(1, round(self._connect_timeout)),
                        application_name="convhub-doorbell-announce",
                    )
                await self._sender.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, self._doorbell.token))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            # Other processes learn of these commits on their re-poll: latency, never an event.
            if not self._send_failing:
                log.warning("doorbell: announcing commits failed: %s", _describe(exc))
            self._send_failing = True
            if self._sender is not None:
                with contextlib.suppress(Exception):
                    await self._sender.close()
                self._sender = None
            return False
        self._send_failing = False
        return True

    # -- announcing this process's commits --------------------------------------------------------

    def _committed(self) -> None:
        """After a commit that wrote events, on the committing thread: have it announced soon."""
        if self._announce_wanted:  # an announcement still to start covers this commit too
            return
        self._announce_wanted = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to announce to
                loop.call_soon_threadsafe(self._schedule_announcement)

    def _schedule_announcement(self) -> None:
        if self._stopping or self._announce_timer is not None or self._announcing is not None:
            return  # a timer or a send in flight: the send re-checks _announce_wanted when it ends
        assert self._loop is not None
        wait = self._announced_at + ANNOUNCE_HOLD - self._loop.time()
        if wait > 0:
            self._announce_timer = self._loop.call_later(wait, self._start_announcement)
        else:
            self._start_announcement()

    def _start_announcement(self) -> None:
        assert self._loop is not None
        self._announce_timer = None
        self._announce_wanted = False  # commits from here on want another announcement
        self._announcing = self._loop.create_task(self._announce(), name="doorbell-announce")

    async def _announce(self) -> None:
        try:
            # Twice at most: a connection that died since the last announcement (a restart, a killed backend)
            # is found dead only when used, and a fresh one sends at once.
            if not await self._send_notification() and not self._stopping:
                await self._send_notification()
        finally:
            assert self._loop is not None
            self._announcing = None
            self._announced_at = self._loop.time()
            if self._announce_wanted:
                self._schedule_announcement()

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
