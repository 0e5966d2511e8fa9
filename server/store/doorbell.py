"""The doorbell: "events were committed, look at the event table".

A ring carries no data. Consumers (the event broadcaster, the webhook
emitter) read the table, which is the truth, and also re-poll on a timer, so
a lost or early ring costs latency, never an event.

Writers never ring by hand: a transaction that appended events marks its
connection (`mark_events_written`), and the pool rings when that connection
is checked back in, which is after COMMIT. A rollback clears the mark, so a
failed write rings nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, event

_MARK = "convhub.events_written"
_TOKEN = "convhub.doorbell_token"
_DOORBELL = "convhub.doorbell"


class DoorbellListener:
    """One consumer's view of the doorbell; belongs to the event loop that created it.

    `listening` False: rings pass it by (a consumer with nothing to do for
    them, e.g. a broadcaster without subscribers, is not woken per commit).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._rung = asyncio.Event()
        self.listening = True

    async def wait(self, timeout: float) -> bool:
        """True when rung since the previous wait (at once if so), False after `timeout` seconds."""
        if not self._rung.is_set():
            try:
                await asyncio.wait_for(self._rung.wait(), timeout)
            except TimeoutError:
                return False
        self._rung.clear()
        return True

    def take(self) -> bool:
        """True when rung since the previous wait or take, without waiting (and, like wait, clears it)."""
        rung = self._rung.is_set()
        self._rung.clear()
        return rung

    def wake(self) -> None:
        """Wake this listener alone (its consumer has work of its own, e.g. outcomes to record); loop thread only."""
        self._rung.set()

    def _ring(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
            self._loop.call_soon_threadsafe(self._rung.set)


class Doorbell:
    """Rings every listener of this process; safe to ring from any thread."""

    def __init__(self) -> None:
        self._listeners: weakref.WeakSet[DoorbellListener] = weakref.WeakSet()
        self._lock = threading.Lock()
        # Names this doorbell in the NOTIFYs its engine's transactions send (pg_doorbell.py), so the
        # process's NotifyListener can skip its own: the ring after commit has woken everyone here already.
        self.token = uuid.uuid4().hex
        self._forward_fd: int | None = None  # guarded by _lock
        self._announce: Callable[[], None] | None = None

    def announce_commits(self, announce: Callable[[], None] | None) -> None:
        """Call `announce` (from any thread) after each commit here that wrote events: it tells other processes.

        Set by the process's NotifyListener, which then NOTIFYs them itself
        after the commit; without it each such transaction NOTIFYs inside
        itself (pg_doorbell.notify_events_written).
        """
        self._announce = announce

    @property
    def announces(self) -> bool:
        return self._announce is not None

    def forward_to(self, fd: int | None) -> None:
        """Also ring another process through the write end of a pipe (`PipeDoorbell` reads the other end).

        The doorbell owns `fd` from now on, and closes the one it replaces
        under its lock: no ring can then write to a closed (perhaps reused) fd.
        """
        with self._lock:
            old, self._forward_fd = self._forward_fd, fd
            if old is not None:
                os.close(old)

    def listener(self) -> DoorbellListener:
        """A new listener bound to the running loop (kept while the caller holds it)."""
        listener = DoorbellListener(asyncio.get_running_loop())
        with self._lock:
            self._listeners.add(listener)
        return listener

    def ring(self) -> None:
        with self._lock:
            listeners = [listener for listener in self._listeners if listener.listening]
            if self._forward_fd is not None:
                # Full: rings are pending there already. Broken: the other process is gone (a new one gets a new pipe).
                with contextlib.suppress(OSError):
                    os.write(self._forward_fd, b"\0")
        for listener in listeners:
            listener._ring()

    def attach(self, engine: Engine) -> None:
        """Ring after every transaction on `engine` that called mark_events_written, once it committed."""

        @event.listens_for(engine, "rollback")
        def _forget(conn: Connection) -> None:
            # An invalidated connection (lost mid-transaction) has no info to
            # read: touching it raises PendingRollbackError over the real error.
            if not conn.invalidated:
                conn.info.pop(_MARK, None)

        @event.listens_for(engine.pool, "connect")
        def _name_doorbell(_dbapi_conn: Any, record: Any) -> None:
            record.info[_TOKEN] = self.token
            record.info[_DOORBELL] = self

        @event.listens_for(engine.pool, "checkin")
        def _ring_after_commit(_dbapi_conn: Any, record: Any) -> None:
            if record is not None and record.info.pop(_MARK, False):
                self.ring()
                announce = self._announce
                if announce is not None:
                    announce()


# After a ring through the pipe, how long further rings wait there to be rung as one (PipeDoorbell).
RING_HOLD = 0.01


class PipeDoorbell:
    """Worker: ring `doorbell` whenever the process at the pipe's other end rang its own (`Doorbell.forward_to`).

    How a `serve` process on SQLite wakes its webhook worker process: SQLite
    has no NOTIFY, and the worker's re-poll alone would cost up to a second.
    """

    name = "doorbell-pipe"

    def __init__(self, fd: int, doorbell: Doorbell) -> None:
        self._fd = fd
        self._doorbell = doorbell
        self._resume: asyncio.TimerHandle | None = None
        self._closed = False

    async def start(self) -> None:
        os.set_blocking(self._fd, False)
        asyncio.get_running_loop().add_reader(self._fd, self._readable)

    async def stop(self) -> None:
        self._closed = True
        if self._resume is not None:
            self._resume.cancel()
        asyncio.get_running_loop().remove_reader(self._fd)

    def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            rings = os.read(self._fd, 4096)
        except BlockingIOError:
            return
        if not rings:  # the writer closed it: nothing more will come (the re-poll timers go on)
            self._closed = True
            loop.remove_reader(self._fd)
            return
        self._doorbell.ring()
        # Rings arriving within RING_HOLD of this one wait in the pipe and ring once when it ends: the
        # serve process rings per commit, and waking this loop for each cost more than the work they ask for.
        loop.remove_reader(self._fd)
        self._resume = loop.call_later(RING_HOLD, self._listen_again)

    def _listen_again(self) -> None:
        self._resume = None
        if not self._closed:
            asyncio.get_running_loop().add_reader(self._fd, self._readable)


def mark_events_written(conn: Connection) -> None:
    """Called by the outbox inside the writing transaction."""
    conn.info[_MARK] = True


def announced_after_commit(conn: Connection) -> bool:
    """Whether `conn`'s commits are announced to other processes by its doorbell (after COMMIT, not inside)."""
    doorbell = conn.info.get(_DOORBELL)
    return isinstance(doorbell, Doorbell) and doorbell.announces


def doorbell_token(conn: Connection) -> str:
    """The token of the doorbell that rings after `conn` commits ("" when none is attached to its engine)."""
    token = conn.info.get(_TOKEN, "")
    return token if isinstance(token, str) else ""
