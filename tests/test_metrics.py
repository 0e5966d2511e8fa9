"""Prometheus /metrics: calls by method and code, REST by route template, batch sizes, pool use."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import grpc
import httpx
from prometheus_client.parser import text_string_to_metric_families

from convhub.v1 import common_pb2, ingest_service_pb2, ingest_service_pb2_grpc
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import Hub, Tenant
from tests.support import SMS, TEL, Api, expect_error

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
GRPC = "convhub_grpc_server_call_duration_seconds"
HTTP = "convhub_http_server_request_duration_seconds"
GET = "/convhub.v1.ConversationService/GetConversation"


def scrape(hub: Hub) -> Samples:
    assert hub.http_base is not None
    response = httpx.get(f"{hub.http_base}/metrics", timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def delta(before: Samples, after: Samples) -> Callable[..., float]:
    def of(name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    return of


def test_grpc_calls_are_counted_by_full_method_and_status_code(hub: Hub, channel: grpc.Channel, tenant: Tenant) -> None:
    api = Api.for_tenant(channel, tenant.metadata)
    conversation_id = api.sms(text="metrics").conversation.id
    before = scrape(hub)
    for _ in range(3):
        api.conversations.GetConversation(cs.GetConversationRequest(id=conversation_id))
    expect_error(
        api.conversations.GetConversation, cs.GetConversationRequest(id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND
    )
    stranger = Api.for_tenant(channel, (("authorization", "Bearer chk_not_a_token"),))
    expect_error(
        stranger.conversations.GetConversation,
        cs.GetConversationRequest(id=conversation_id),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    d = delta(before, scrape(hub))
    assert d(f"{GRPC}_count", grpc_method=GET, grpc_code="OK") == 3
    assert d(f"{GRPC}_bucket", grpc_method=GET, grpc_code="OK", le="+Inf") == 3
    assert d(f"{GRPC}_sum", grpc_method=GET, grpc_code="OK") > 0
    assert d(f"{GRPC}_count", grpc_method=GET, grpc_code="NOT_FOUND") == 1
    assert d(f"{GRPC}_count", grpc_method=GET, grpc_code="UNAUTHENTICATED") == 1


def test_rest_requests_are_labelled_by_route_template_never_by_raw_path(hub: Hub, tenant: Tenant) -> None:
    assert hub.http_base is not None
    ids = [str(uuid.uuid4()) for _ in range(2)]
    before = scrape(hub)
    with httpx.Client(base_url=hub.http_base, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=10) as web:
        assert [web.get(f"/v1.0/conversations/{i}").status_code for i in ids] == [404, 404]
        assert web.get("/v1.0/conversations", params={"page_size": 1}).status_code == 200
        assert web.get(f"/no/such/{ids[0]}").status_code == 404
    after = scrape(hub)
    d = delta(before, after)
    template = "/v1.0/conversations/{id}"
    assert d(f"{HTTP}_count", http_method="GET", http_route=template, http_status="404") == 2
    assert d(f"{HTTP}_count", http_method="GET", http_route="/v1.0/conversations", http_status="200") == 1
    assert d(f"{HTTP}_count", http_method="GET", http_route="(unmatched)", http_status="404") == 1
    assert not [key for key in after if any(i in value for i in ids for _, value in key[1])], (
        "a raw path became a label"
    )


def test_group_commit_batch_sizes_add_up_to_the_ingested_messages(
    hub: Hub, channel: grpc.Channel, tenant: Tenant
) -> None:
    stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
    requests = [
        ingest_service_pb2.IngestMessageRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target="+15559990000"),
            peer=common_pb2.Address(type=TEL, target=f"+1555000{n:04d}"),
            text=f"batch {n}",
        )
        for n in range(8)
    ]
    before = scrape(hub)
    calls = [stub.IngestMessage.future(r, metadata=tenant.metadata, timeout=10) for r in requests]  # concurrent
    for call in calls:
        call.result()
    d = delta(before, scrape(hub))
    assert d("convhub_group_commit_batch_size_sum") == 8  # every item in exactly one batch
    assert 1 <= d("convhub_group_commit_batch_size_count") <= 8


def test_database_pool_use_is_read_at_scrape_time(hub: Hub, channel: grpc.Channel, tenant: Tenant) -> None:
    Api.for_tenant(channel, tenant.metadata).conversations.ListConversations(cs.ListConversationsRequest())
    samples = scrape(hub)
    assert samples[("convhub_db_pool_size", frozenset({("pool", "writer")}))] == 8  # CONVHUB_DB_WORKERS default
    # Reads keep one reader connection per reading thread checked out (Database.read).
    assert samples[("convhub_db_pool_checked_out", frozenset({("pool", "reader")}))] >= 1
    assert ("convhub_db_pool_checked_out", frozenset({("pool", "writer")})) in samples


def test_calls_of_every_service_on_the_server_are_counted_health_included(hub: Hub, channel: grpc.Channel) -> None:
    """Handlers are observed as they are registered (observability/grpc_calls.py), not by an interceptor:
    the health service, registered by grpc_health's own function, must be observed like ours."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    before = scrape(hub)
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    d = delta(before, scrape(hub))
    assert d(f"{GRPC}_count", grpc_method="/grpc.health.v1.Health/Check", grpc_code="OK") == 1
