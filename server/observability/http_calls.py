"""Observes every REST request: latency histogram by route template and status, one access line, one span.

Raw ASGI middleware around the whole HTTP app (a Starlette `BaseHTTPMiddleware`
would cost more than the request). The route label is the matched *template*
— the gateway leaves it in the scope under `ROUTE_KEY`, Starlette's own routes
under `"route"` — never the raw path, whose ids would make every request a new
series; the query string (which may carry `?token=`) is never read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from time import perf_counter
from typing import Any

from prometheus_client import Histogram

from convhub.server.observability.calls import CURRENT_CALL, CallRecord
from convhub.server.observability.logs import AccessLog
from convhub.server.observability.metrics import HTTP_REQUEST_SECONDS
from convhub.server.observability.tracing import ServerSpans, carrier_from_asgi_headers

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the REST gateway puts the matched route template.
ROUTE_KEY = "convhub.route"
# Where the HTTP app puts the request's id (server/gateway/request_ids.py); the access line names it.
REQUEST_ID_KEY = "convhub.request_id"
UNMATCHED = "(unmatched)"
# Status recorded when the client went away before any response started (nginx's convention).
CLIENT_CLOSED = 499
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_of(scope: Scope) -> str:
    """The route template that served the request, or UNMATCHED."""
    route = scope.get(ROUTE_KEY)
    if route is not None:
        return str(route)
    starlette_route = scope.get("route")
    path = getattr(starlette_route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class HttpCallObserver:
    """ASGI middleware observing each HTTP request; other scope types pass straight through."""

    def __init__(self, app: ASGIApp, *, metrics: bool, access_log: AccessLog | None, spans: ServerSpans | None) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.spans = spans
        self._children: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = perf_counter()
        method = scope["method"] if scope["method"] in HTTP_METHODS else "OTHER"
        record = token = span = activation = None
        if self.access_log is not None or self.spans is not None:
            record = CallRecord()
            token = CURRENT_CALL.set(record)
        if self.spans is not None:
            attributes = {"http.request.method": method}
            span = self.spans.start(method, carrier_from_asgi_headers(scope["headers"]), attributes)
            activation = self.spans.activate(span)
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        except BaseException:
            status = status or 500
            raise
        finally:
            status = status or CLIENT_CLOSED
            seconds = perf_counter() - t0
            route = route_of(scope)
            if self.metrics:
                key = (method, route, status)
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = HTTP_REQUEST_SECONDS.labels(method, route, str(status))
                child.observe(seconds)
            customer_id = record.customer_id if record is not None else None
            if self.access_log is not None:
                client = scope.get("client")
                peer = f"{client[0]}:{client[1]}" if client else "-"
                self.access_log.http(method, route, status, seconds, customer_id, peer, scope.get(REQUEST_ID_KEY))
            if span is not None and self.spans is not None:
                with contextlib.suppress(ValueError):
                    self.spans.deactivate(activation)
                end_attributes: dict[str, Any] = {"http.route": route, "http.response.status_code": status}
                if customer_id is not None:
                    end_attributes["convhub.customer_id"] = customer_id
                self.spans.end(span, end_attributes, status >= 500, name=f"{method} {route}")
            if token is not None:
                with contextlib.suppress(ValueError):
                    CURRENT_CALL.reset(token)
