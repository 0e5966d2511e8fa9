"""grpc.health.v1.Health whose Watch streams end at shutdown once they have delivered NOT_SERVING.

The stock servicer keeps every Watch open until the server stops, so the
gRPC drain waits the whole grace for probes and client-side health checks
that have nothing more to say. Here shutdown turns every service NOT_SERVING,
each Watch writes that and returns, and the drain waits only for real calls.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class HealthServicer(health_pb2_grpc.HealthServicer):
    """Serving status per service name ("" is the whole server)."""

    def __init__(self) -> None:
        self._status: dict[str, health_pb2.HealthCheckResponse.ServingStatus.ValueType] = {"": SERVING}
        self._version = 0
        self._changed = asyncio.Condition()
        self._stopping = False

    async def Check(self, request: health_pb2.HealthCheckRequest, context: Any) -> health_pb2.HealthCheckResponse:
        status = self._status.get(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: Any) -> None:
        last = None
        while True:
            version = self._version
            status = self._status.get(request.service, SERVICE_UNKNOWN)
            if status != last:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                last = status
                continue  # the status may have changed while the write waited: look again before waiting
            if self._stopping:
                return  # the last status written is the final NOT_SERVING: do not hold the drain
            async with self._changed:
                await self._changed.wait_for(lambda v=version: self._version != v)  # type: ignore[misc]

    async def set(self, service: str, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        """Set one service's status; ignored once shutdown has begun (it stays NOT_SERVING)."""
        if not self._stopping:
            self._status[service] = status
            await self._notify()

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING for good; open Watch streams deliver it and end."""
        self._stopping = True
        for service in self._status:
            self._status[service] = NOT_SERVING
        await self._notify()

    async def _notify(self) -> None:
        self._version += 1
        async with self._changed:
            self._changed.notify_all()
