"""The REST listener: uvicorn on our event loop, with connection limits and a drain that keeps the commit rule.

Limits (each a setting, see config.py):
  * header timeout: a connection must deliver a request's headers within N
    seconds of connecting (or of the first byte of a later request on a
    kept-alive connection), else it is closed. uvicorn has no such timeout;
    without it a silent or byte-at-a-time client holds a connection forever.
  * keep-alive timeout: an idle connection is closed N seconds after its last
    response (uvicorn's own timer).
  * connection cap: one connection past the cap is answered 503 and closed
    at once, before anything is read; existing connections are unaffected.

Drain (`HttpServer.drain`): stop accepting, close idle connections, let
in-flight requests finish until the shared shutdown deadline; past it, call
`at_deadline` (which closes the database's commits) *before* cancelling what
is left, so a request cancelled at the deadline cannot commit afterwards and
answers 503 instead of a result it never got (see gateway/app.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from google.rpc import code_pb2
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from convhub.server.gateway.errors import dumps, error_payload, simple_status

log = logging.getLogger("convhub.http")

# After the commits are closed at the deadline, requests whose commit already
# happened get this long to deliver their result before the rest are cancelled.
SETTLE_SECONDS = 0.25
# Cancelled requests answer 503 at once; this only bounds a misbehaving one.
CANCEL_WAIT_SECONDS = 2.0


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    keepalive_timeout: float
    max_connections: int


def _over_capacity_response() -> bytes:
    body = dumps(error_payload(simple_status(code_pb2.UNAVAILABLE, "too many open connections; retry later"), 503))
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        b"connection: close\r\nretry-after: 1\r\ncontent-length: " + str(len(body)).encode("ascii") + b"\r\n\r\n"
    )
    return head + body


_OVER_CAPACITY = _over_capacity_response()


class _LimitedConfig(uvicorn.Config):
    def __init__(self, app: Any, limits: ConnectionLimits, **options: Any) -> None:
        super().__init__(app, http=LimitedHttpToolsProtocol, **options)
        self.limits = limits


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus a header-read deadline and a connection cap."""

    def __init__(self, config: uvicorn.Config, server_state: ServerState, app_state: dict[str, Any], _loop: Any = None):
        super().__init__(config, server_state, app_state, _loop)
        limits: ConnectionLimits = config.limits  # type: ignore[attr-defined]
        self.timeout_keep_alive = limits.keepalive_timeout  # type: ignore[assignment]
        self._header_timeout = limits.header_timeout
        self._max_connections = limits.max_connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._awaiting_headers = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self._max_connections:
            log.debug("refusing a connection past the cap of %d", self._max_connections)
            transport.write(_OVER_CAPACITY)
            transport.close()
            return
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Armed only when a chunk ends inside a request's headers: a request that
        # arrives whole (the usual case) costs no timer.
        if self._awaiting_headers and self._header_timer is None and not self.transport.is_closing():
            self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._disarm_header_timer()
        super().on_headers_complete()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self._header_timeout, self._header_timeout_expired)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout_expired(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection that sent no complete request headers in %ss", self._header_timeout)
            self.transport.close()


class HttpServer(uvicorn.Server):
    """uvicorn serving on sockets we bound, sharing our loop and signals; stopped with `drain`."""

    def __init__(self, app: Any, limits: ConnectionLimits) -> None:
        super().__init__(
            _LimitedConfig(
                app,
                limits,
                access_log=False,  # ours (observability/http_calls.py) knows route templates and customers
                log_config=None,  # uvicorn's records go through our handler and format
                lifespan="off",
                log_level="warning",
            )
        )
        self._deadline = 0.0
        self._at_deadline: Callable[[], None] = lambda: None
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # our signal handlers decide when to stop

    async def start(self, sock: socket.socket) -> None:
        """Serve on `sock`; returns once it accepts connections."""
        self._task = asyncio.create_task(self.serve(sockets=[sock]))
        while not self.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the HTTP server stopped while starting")
            await asyncio.sleep(0.01)

    async def drain(self, deadline: float, at_deadline: Callable[[], None]) -> None:
        """Stop accepting and finish in-flight requests by `deadline` (loop time); see the module docstring."""
        self._deadline = deadline
        self._at_deadline = at_deadline
        self.should_exit = True
        if self._task is not None:
            await self._task

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        state = self.server_state
        log.info("shutdown: REST stops accepting connections (%d requests in flight)", len(state.tasks))
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(state.connections):
            connection.shutdown()  # idle ones close now, busy ones after their response
        if not await _wait_until_done(state, self._deadline):
            log.info(
                "shutdown: grace over with %d REST requests in flight: closing commits, then cancelling them",
                len(state.tasks),
            )
            self._at_deadline()
            loop = asyncio.get_running_loop()
            if not await _wait_until_done(state, loop.time() + SETTLE_SECONDS):
                for task in list(state.tasks):
                    task.cancel()
                await _wait_until_done(state, loop.time() + CANCEL_WAIT_SECONDS)
        for connection in list(state.connections):
            connection.transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                for server in self.servers:
                    await server.wait_closed()


async def _wait_until_done(state: ServerState, deadline: float) -> bool:
    """True once no request task is left, False if `deadline` (loop time) passes first."""
    loop = asyncio.get_running_loop()
    while state.tasks:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        await asyncio.wait(list(state.tasks), timeout=remaining)
    return True
