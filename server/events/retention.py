"""Retention: events older than `CONVHUB_EVENT_RETENTION` are deleted by a background worker.

Small batches, each its own short transaction on a database thread, so the
sweep never holds a lock for long nor stalls the event loop. Each customer
loses a prefix of its log (lowest sequences first, see store/event_log.py),
so readers resuming below it are told the oldest kept sequence
(OUT_OF_RANGE) rather than silently skipping a hole.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor

from convhub.server.store import event_log
from convhub.server.store.db import Database, now_us

log = logging.getLogger("convhub.events")


def sweep_interval(retention: float) -> float:
    """How often to sweep: a quarter of the retention, between half a second and a minute."""
    return min(60.0, max(0.5, retention / 4))


class EventPruner:
    """Deletes expired events (a `Worker`); several replicas may run it: deletes of a prefix commute."""

    name = "event-pruner"

    def __init__(self, db: Database, executor: Executor, *, retention: float, batch: int = 1000) -> None:
        self._db = db
        self._executor = executor
        self._retention_us = int(retention * 1_000_000)
        self._interval = sweep_interval(retention)
        self._batch = batch
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Let the batch in progress commit, then return."""
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # the database is away: try again next time
                log.warning("event retention sweep failed (%s); retrying later", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._interval)

    async def sweep(self) -> int:
        """Delete every event older than the retention, batch by batch; returns how many went."""
        loop = asyncio.get_running_loop()
        cutoff = now_us() - self._retention_us
        prefixes = await loop.run_in_executor(self._executor, self._prefixes, cutoff)
        deleted = 0
        for customer_id, upto in prefixes:
            while not self._stopping.is_set():
                n = await loop.run_in_executor(self._executor, self._delete_batch, customer_id, upto)
                if n == 0:
                    break
                deleted += n
        return deleted

    def _prefixes(self, cutoff: int) -> list[tuple[str, int]]:
        with self._db.read() as conn:
            return event_log.prunable_prefixes(conn, cutoff)

    def _delete_batch(self, customer_id: str, upto: int) -> int:
        with self._db.writer.begin() as conn:
            return event_log.delete_prefix_batch(conn, customer_id, upto, self._batch)
