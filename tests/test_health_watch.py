"""The health Watch stream always ends on NOT_SERVING, even when shutdown begins while it is writing.

Under load, SIGTERM could land while a Watch was still writing SERVING; the
stream then saw `stopping` and ended without ever sending NOT_SERVING (the
flake once seen in test_sigterm_turns_health_not_serving_before_the_server_stops).
Here the write is held open deterministically while shutdown begins.
"""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health_pb2

from convhub.server.api.health import NOT_SERVING, SERVING, HealthServicer


class HeldWrites:
    """A Watch context whose first write waits until the test lets it finish."""

    def __init__(self) -> None:
        self.written: list[int] = []
        self.first_write_started = asyncio.Event()
        self.release_first_write = asyncio.Event()

    async def write(self, response: health_pb2.HealthCheckResponse) -> None:
        if not self.written and not self.first_write_started.is_set():
            self.first_write_started.set()
            await self.release_first_write.wait()
        self.written.append(response.status)


async def test_shutdown_during_a_watch_write_still_delivers_not_serving() -> None:
    health = HealthServicer()
    context = HeldWrites()
    watch = asyncio.create_task(health.Watch(health_pb2.HealthCheckRequest(service=""), context))
    await context.first_write_started.wait()  # SERVING is being written...
    await health.enter_graceful_shutdown()  # ...when shutdown begins
    context.release_first_write.set()
    await asyncio.wait_for(watch, 5)  # the stream ends by itself
    assert context.written == [SERVING, NOT_SERVING]


async def test_a_watch_open_at_shutdown_gets_not_serving_and_ends() -> None:
    health = HealthServicer()
    context = HeldWrites()
    context.release_first_write.set()
    watch = asyncio.create_task(health.Watch(health_pb2.HealthCheckRequest(service=""), context))
    await asyncio.sleep(0.05)
    await health.enter_graceful_shutdown()
    await asyncio.wait_for(watch, 5)
    assert context.written == [SERVING, NOT_SERVING]
