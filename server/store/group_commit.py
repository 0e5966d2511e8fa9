"""Group commit: write transactions that arrive together commit together.

Ingest is the hot write path. Each call's own work is a few indexed
statements; what dominates is per-transaction cost: BEGIN, the event
sequence UPDATE (a row lock), the event INSERT and COMMIT. `GroupCommit`
writes one batch at a time on a worker thread; items submitted while a batch
is being written queue up and form the next batch. (Writing on the event loop
instead was tried: calls then arrive one per loop turn and batches stay at 1.)

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
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._scheduled = False
        self._writing = False

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if not self._scheduled and not self._writing:
            # Let every call already waiting in this loop turn join the batch.
            self._scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        if self._writing or not self._queue:
            return
        batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
        items = [item for item, _ in batch]
        GROUP_COMMIT_BATCH_SIZE.observe(len(items))
        self._writing = True
        loop = asyncio.get_running_loop()
        task = loop.run_in_executor(self._executor, self._write_batch, items)

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

    @staticmethod
    def _settle(batch: list[tuple[T, asyncio.Future[R]]], outcomes: list[Outcome[R]]) -> None:
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller gave up (deadline, cancellation)
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
