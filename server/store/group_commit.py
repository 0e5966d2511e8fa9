"""Group commit: write transactions that arrive together commit together.

Ingest is the hot write path. Each call's own work is a few indexed
statements; what dominates is per-transaction cost: BEGIN, the event
sequence UPDATE (a row lock), the event INSERT and COMMIT. `GroupCommit`
writes one batch at a time on a worker thread; items submitted while a batch
is being written queue up and form the next batch. (Writing on the event loop
instead was tried: calls then arrive one per loop turn and batches stay at 1.)

Deadlines (store/commit_gate.py): an item whose caller gave up (cancelled,
or past its deadline) is dropped before its batch is written; a batch commits
only if every caller in it still waits (it claims them all), and items
refused only because a batch-mate gave up go into the next batch. A caller
cancelled after its batch claimed the commit waits for the result instead.

Correctness does not depend on batching: when a batch fails as a whole (a
uniqueness race, a deadlock, any error) it is rolled back and every item is
written again alone, so an item fails only for its own reasons and no item
is half-written.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeAlias, TypeVar

from convhub.server.observability.metrics import GROUP_COMMIT_BATCH_SIZE
from convhub.server.store.commit_gate import CallDeadline, current_deadline, run_with_deadlines
from convhub.server.store.faults import DeadlinePassed

T = TypeVar("T")
R = TypeVar("R")

# One result per item: the value, or the exception that item alone raised.
Outcome: TypeAlias = R | BaseException


class GroupCommit(Generic[T, R]):
    """Queue items and hand them to `write_batch` in groups of at most `max_batch`.

    `write_batch(items)` returns one outcome per item; it runs on `executor`
    (None: the loop's default), one batch at a time.
    """

    def __init__(
        self,
        write_batch: Callable[[Sequence[T]], list[Outcome[R]]],
        *,
        executor: Executor | None,
        max_batch: int = 64,
    ) -> None:
        self._write_batch = write_batch
        self._executor = executor
        self._max_batch = max_batch
        self._queue: list[_Entry[T, R]] = []
        self._scheduled = False
        self._writing = False

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        entry = _Entry(item, loop.create_future(), current_deadline())
        self._queue.append(entry)
        if not self._scheduled and not self._writing:
            # Let every call already waiting in this loop turn join the batch.
            self._scheduled = True
            loop.call_soon(self._flush)
        # Awaited as it is, not through asyncio.shield (an extra future and loop turn per call): a cancel
        # cancels it, and when the batch had claimed the commit first a fresh future takes the outcome.
        try:
            return await entry.future
        except asyncio.CancelledError:
            future, deadline = entry.future, entry.deadline
            if deadline is None or deadline.abandon():
                future.cancel()  # not written, or its commit is refused
                raise
            if future.done() and not future.cancelled():
                return future.result()  # settled just before the cancel landed
            entry.future = loop.create_future()  # its batch claimed the commit: answer with the result
            return await entry.future

    def _flush(self) -> None:
        self._scheduled = False
        if self._writing or not self._queue:
            return
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        batch = [entry for entry in batch if _still_wanted(entry)]
        if not batch:
            self._next()
            return
        items = [entry.item for entry in batch]
        deadlines = [entry.deadline for entry in batch]
        GROUP_COMMIT_BATCH_SIZE.observe(len(items))
        self._writing = True
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self._executor, run_with_deadlines, deadlines, self._write_batch, items)

        def done(f: asyncio.Future[list[Outcome[R]]]) -> None:
            self._writing = False
            exc = f.exception()
            self._settle(batch, [exc] * len(items) if exc is not None else f.result())
            self._next()

        task.add_done_callback(done)

    def _next(self) -> None:
        if self._queue and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _settle(self, batch: list[_Entry[T, R]], outcomes: list[Outcome[R]]) -> None:
        again = []
        for entry, outcome in zip(batch, outcomes, strict=True):
            future, deadline = entry.future, entry.deadline
            if future.done():  # the caller gave up (deadline, cancellation)
                continue
            if isinstance(outcome, DeadlinePassed) and not (deadline is not None and deadline.given_up):
                again.append(entry)  # refused because a batch-mate gave up, not its own caller
            elif isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        self._queue[:0] = again


class _Entry(Generic[T, R]):
    """An item, its caller's future (replaced when a cancelled caller waits on for its commit) and deadline."""

    __slots__ = ("deadline", "future", "item")

    def __init__(self, item: T, future: asyncio.Future[R], deadline: CallDeadline | None) -> None:
        self.item = item
        self.future = future
        self.deadline = deadline


def _still_wanted(entry: _Entry[T, R]) -> bool:
    """False for an item whose caller gave up: it is not written at all."""
    future, deadline = entry.future, entry.deadline
    if future.done():  # cancelled by its caller
        return False
    if deadline is not None and deadline.given_up:
        future.set_exception(DeadlinePassed("the call's deadline passed before its write started"))
        return False
    return True
