"""The inactivity sweep worker: every CONVHUB_SWEEP_INTERVAL seconds, close idle conversations.

The rule and the replica-safe UPDATE are LifecycleService.close_inactive's;
this only runs it on a timer, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import Executor

from convhub.server.services.lifecycle import LifecycleService

log = logging.getLogger("convhub.lifecycle")


class InactivitySweep:
    name = "inactivity-sweep"

    def __init__(self, lifecycle: LifecycleService, interval: float, executor: Executor) -> None:
        self.lifecycle = lifecycle
        self.interval = interval
        self.executor = executor
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="convhub-inactivity-sweep")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)
            if self._stop.is_set():
                return
            try:
                closed = await loop.run_in_executor(self.executor, self.lifecycle.close_inactive)
            except Exception:
                log.exception("inactivity sweep failed; trying again next interval")
                continue
            if closed:
                log.info("inactivity sweep closed %d conversation(s)", closed)
