"""Background workers: the protocol they follow and the supervisor that starts and stops them.

A worker (event broadcaster, webhook emitter, delivery worker, sweeps) owns
its asyncio task(s). `start` returns promptly; `stop` lets the current item
finish, releases whatever the worker had claimed, and returns. The supervisor
starts workers in the order they were added and stops them in reverse, so a
worker can rely on those added before it (the doorbell listener before the
broadcaster that it wakes).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Protocol

log = logging.getLogger("convhub.workers")


def claimer_id() -> str:
    """Who holds a lease (`locked_by`, at most 64 characters): host, process and a random tag per worker."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{os.urandom(4).hex()}"


class Worker(Protocol):
    name: str

    async def start(self) -> None:
        """Start the background task(s); return promptly."""

    async def stop(self) -> None:
        """Finish the current item, release claims, and return."""


class Supervisor:
    """Starts workers in order and stops them in reverse; one failing stop does not skip the others."""

    def __init__(self) -> None:
        self._workers: list[Worker] = []
        self._started: list[Worker] = []

    def add(self, worker: Worker) -> None:
        self._workers.append(worker)

    @property
    def workers(self) -> list[Worker]:
        return list(self._workers)

    async def start(self) -> None:
        for worker in self._workers:
            await worker.start()
            self._started.append(worker)

    async def stop(self) -> None:
        while self._started:
            worker = self._started.pop()
            try:
                await worker.stop()
            except Exception:
                log.exception("worker %s failed to stop cleanly", worker.name)
