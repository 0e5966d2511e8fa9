"""Prometheus metrics: the process's one registry, every metric in it, and the /metrics page.

Add a metric with one line in the block below, e.g.

    DELIVERY_OUTCOMES = Counter("convhub_delivery_outcomes_total", "Sends by outcome.", ["channel", "outcome"],
                                registry=REGISTRY)

and for a value read at scrape time (a queue depth) register a `Collector` in
`register_collector`'s way, or use `Gauge(...).set_function(fn)`.

Labels stay bounded: a gRPC method's full name, an HTTP route *template*
(never a raw path, which carries ids), status codes, pool names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import Engine
from sqlalchemy.pool import QueuePool
from starlette.requests import Request
from starlette.responses import Response

# No `_created` series: they double the page and no dashboard of ours reads them.
disable_created_metrics()
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

# Calls finish in well under a millisecond on the hot paths, and in seconds when a database stalls.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# --- every metric of the process: one line each -------------------------------------------------
GRPC_CALL_SECONDS = Histogram(
    "convhub_grpc_server_call_duration_seconds",
    "gRPC calls by full method name and status code, and how long they took (_count: calls).",
    ["grpc_method", "grpc_code"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
HTTP_REQUEST_SECONDS = Histogram(
    "convhub_http_server_request_duration_seconds",
    "REST requests by HTTP method, route template and status, and how long they took (_count: requests).",
    ["http_method", "http_route", "http_status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
GROUP_COMMIT_BATCH_SIZE = Histogram(
    "convhub_group_commit_batch_size",
    "Items written per group-commit transaction (IngestMessage calls sharing one commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
# -------------------------------------------------------------------------------------------------


class DatabasePoolCollector(Collector):
    """Connection pool use, read at scrape time (nothing is counted per call).

    The reader engine keeps one connection per reading thread checked out on
    purpose (see `Database.read`), so its checked-out count is the number of
    threads that have read, not load.
    """

    def __init__(self, pools: dict[str, Engine]) -> None:
        self._pools = pools

    def collect(self) -> Iterator[Metric]:
        used = GaugeMetricFamily(
            "convhub_db_pool_checked_out", "Database connections checked out of the pool.", labels=["pool"]
        )
        size = GaugeMetricFamily(
            "convhub_db_pool_size",
            "Connections the pool keeps (it may open as many again as overflow).",
            labels=["pool"],
        )
        for name, engine in self._pools.items():
            pool = engine.pool
            if isinstance(pool, QueuePool):
                used.add_metric([name], pool.checkedout())
                size.add_metric([name], pool.size())
        yield used
        yield size

    def describe(self) -> Iterable[Metric]:
        return []


def register_collector(collector: Collector) -> Collector:
    """Add a scrape-time collector to the registry (undo with `REGISTRY.unregister` on stop)."""
    REGISTRY.register(collector)
    return collector


async def metrics_page(request: Request) -> Response:
    """GET /metrics in the Prometheus text format."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
