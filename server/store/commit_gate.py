"""The last check before COMMIT: a write commits only while its caller still waits and the process still commits.

A caller told DEADLINE_EXCEEDED must not find its write stored (it may retry
without an idempotency key and get a duplicate), and after shutdown's grace
no call may commit behind the back of a client that is being cut off. Both
rules are enforced in one place, the writer engine's `commit` event, which
runs just before the driver's COMMIT: raising there leaves the transaction
uncommitted and the pool rolls it back.

Each call carries a `CallDeadline` (a context variable, set by the dispatcher;
code handing work to a thread copies the context). Commit and give-up are
decided under the deadline's lock, so exactly one wins: the gate *claims* the
call (from then on the transport waits for the write's result, even a little
past the deadline), or the transport *abandons* it (from then on no commit
for it passes the gate). A write also needs COMMIT_MARGIN left, so that a
gRPC client, whose own clock decides DEADLINE_EXCEEDED, gets the answer in
time. A batch of several callers' items (group commit) claims all or none.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from sqlalchemy import Engine, event

from convhub.server.store.faults import CommitsClosed, DeadlinePassed

R = TypeVar("R")

# Time a commit needs left (seconds): to finish, and for its answer to reach
# a gRPC caller before that caller's own clock says DEADLINE_EXCEEDED.
COMMIT_MARGIN = 0.02

_OPEN, _CLAIMED, _ABANDONED = range(3)


class CallDeadline:
    """One call's deadline, shared by its transport (on the loop) and its write (on any thread)."""

    __slots__ = ("_lock", "_state", "at")

    def __init__(self, at: float | None = None) -> None:
        self.at = at  # time.monotonic() seconds; None: no deadline
        self._lock = threading.Lock()
        self._state = _OPEN

    @property
    def given_up(self) -> bool:
        """True once the caller abandoned the call or too little time is left for a write to commit."""
        return self._state == _ABANDONED or (
            self._state == _OPEN and self.at is not None and time.monotonic() > self.at - COMMIT_MARGIN
        )

    def abandon(self) -> bool:
        """The transport gives up: True if no commit can happen any more, False if one was claimed (wait for it)."""
        with self._lock:
            if self._state == _CLAIMED:
                return False
            self._state = _ABANDONED
            return True


NO_DEADLINE: tuple[CallDeadline, ...] = ()
_deadlines: ContextVar[tuple[CallDeadline, ...]] = ContextVar("convhub_call_deadlines", default=NO_DEADLINE)


def current_deadline() -> CallDeadline | None:
    """The running call's deadline, if a transport set one."""
    deadlines = _deadlines.get()
    return deadlines[0] if len(deadlines) == 1 else None


@contextlib.contextmanager
def commit_deadline(*deadlines: CallDeadline | None) -> Iterator[None]:
    """Writes inside (and in contexts copied from inside) commit only while every one of these callers waits."""
    token = _deadlines.set(tuple(d for d in deadlines if d is not None))
    try:
        yield
    finally:
        _deadlines.reset(token)


def enter_call_deadline(deadline: CallDeadline) -> Token[tuple[CallDeadline, ...]]:
    """commit_deadline(deadline) without a context manager, for the per-call hot path; pair with leave."""
    return _deadlines.set((deadline,))


def leave_call_deadline(entered: Token[tuple[CallDeadline, ...]]) -> None:
    _deadlines.reset(entered)


def run_with_deadlines(deadlines: Sequence[CallDeadline | None], fn: Callable[..., R], *args: Any) -> R:
    """Call `fn(*args)` (typically on a worker thread) with commits bound to `deadlines`."""
    with commit_deadline(*deadlines):
        return fn(*args)


def claim_commit(deadlines: Sequence[CallDeadline]) -> None:
    """Claim every call for a commit, or raise DeadlinePassed (claiming none) if any caller gave up."""
    ordered = sorted(deadlines, key=id)  # one lock order, whatever the batch
    with contextlib.ExitStack() as held:
        for deadline in ordered:
            held.enter_context(deadline._lock)
        if any(d.given_up for d in ordered):
            raise DeadlinePassed("the call's deadline passed before its write could commit")
        for deadline in ordered:
            deadline._state = _CLAIMED


class CommitGate:
    """Refuses COMMIT for callers that gave up, and every COMMIT once closed."""

    def __init__(self) -> None:
        self._closed = False

    def close(self) -> None:
        """From now on every commit fails with CommitsClosed (UNAVAILABLE: nothing was written, retry elsewhere)."""
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def check(self) -> None:
        if self._closed:
            raise CommitsClosed("the server is shutting down and accepts no more writes")
        deadlines = _deadlines.get()
        if deadlines:
            claim_commit(deadlines)

    def attach(self, engine: Engine) -> None:
        @event.listens_for(engine, "commit")
        def _before_commit(_conn: Any) -> None:
            self.check()
