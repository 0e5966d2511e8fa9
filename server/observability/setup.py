"""The process's observability, built once from Settings and plugged into both transports.

Each part is switchable (`CONVHUB_METRICS`, `CONVHUB_ACCESS_LOG`, the log level,
`OTEL_EXPORTER_OTLP_ENDPOINT`); with all of them off no handler wrapper or
middleware is installed at all, so a call pays nothing.
"""

from __future__ import annotations

from typing import Any

import grpc
from starlette.routing import Route

from convhub.server.config import Settings
from convhub.server.observability.grpc_calls import GrpcCallObserver
from convhub.server.observability.http_calls import ASGIApp, HttpCallObserver
from convhub.server.observability.logs import AccessLog, access_log_enabled
from convhub.server.observability.metrics import REGISTRY, DatabasePoolCollector, metrics_page, register_collector
from convhub.server.observability.tracing import ServerSpans, start_tracing
from convhub.server.store.db import Database


class Observability:
    """What app.py plugs in: the gRPC handler observer, the /metrics route, the HTTP middleware; `close` on stop."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.metrics = settings.metrics
        self.access_log = AccessLog(settings.log_format) if settings.access_log and access_log_enabled() else None
        self.spans: ServerSpans | None = start_tracing(
            settings.otel_exporter_otlp_endpoint, settings.otel_service_name, [db.writer, db.reader]
        )
        self._pools = (
            register_collector(DatabasePoolCollector({"writer": db.writer, "reader": db.reader}))
            if self.metrics
            else None
        )

    @property
    def observes_calls(self) -> bool:
        return self.metrics or self.access_log is not None or self.spans is not None

    def observe_grpc(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """`server` for registering services, observing their calls (or `server` itself when nothing observes)."""
        if not self.observes_calls:
            return server
        return GrpcCallObserver(metrics=self.metrics, access_log=self.access_log, spans=self.spans).observe(server)

    def http_routes(self) -> list[Route]:
        """`/metrics`, when metrics are on."""
        return [Route("/metrics", metrics_page, methods=["GET", "HEAD"])] if self.metrics else []

    def wrap_http(self, app: Any) -> ASGIApp:
        """The HTTP app with every request observed (or `app` itself when nothing observes calls)."""
        if not self.observes_calls:
            return app
        return HttpCallObserver(app, metrics=self.metrics, access_log=self.access_log, spans=self.spans)

    def close(self) -> None:
        """Flush buffered spans and access lines, and drop the pool collector (after the servers stopped)."""
        if self.access_log is not None:
            self.access_log.flush()
        if self.spans is not None:
            self.spans.shutdown()
        if self._pools is not None:
            REGISTRY.unregister(self._pools)
            self._pools = None
