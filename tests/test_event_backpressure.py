"""Backpressure and keepalive: a subscriber that stops reading is ended with its last sequence, and resumes.

The server here keeps at most 20 events waiting per subscriber and sends an
SSE keepalive comment after 0.3 s of silence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from convhub.client import ConvhubClient
from convhub.v1 import event_service_pb2, event_service_pb2_grpc
from tests.conftest import BACKENDS, Hub, new_tenant, running_hub
from tests.eventsupport import head
from tests.support import Api, rich_error

BUFFER = 20
WRITES = 600  # 4 + 599 * 2 events: far more than the buffer plus what the transport holds


@pytest.fixture(scope="module", params=BACKENDS)
def tuned_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    env = {"CONVHUB_EVENT_SUBSCRIBER_BUFFER": str(BUFFER), "CONVHUB_SSE_KEEPALIVE": "0.3"}
    yield from running_hub(request.param, tmp_path_factory.mktemp(f"tuned-{request.param}"), env=env)


def write_many(hub: Hub, metadata: tuple[tuple[str, str], ...], count: int) -> None:
    with hub.channel() as ch:
        api = Api.for_tenant(ch, metadata)
        for i in range(count):
            api.sms(text=f"m{i}")


def test_a_subscriber_that_stops_reading_is_ended_with_its_last_sequence_and_resumes_without_gap(
    tuned_hub: Hub,
) -> None:
    tenant = new_tenant(tuned_hub)
    # No BDP probing: the HTTP/2 window stays small, so the server's writes block soon.
    with grpc.insecure_channel(tuned_hub.grpc_target, options=[("grpc.http2.bdp_probe", 0)]) as ch:
        stub = event_service_pb2_grpc.EventServiceStub(ch)
        request = event_service_pb2.SubscribeEventsRequest()
        call = stub.SubscribeEvents(request, metadata=tenant.metadata, timeout=60)
        time.sleep(0.3)  # subscribed (live), and not reading
        write_many(tuned_hub, tenant.metadata, WRITES)
        final = head(tuned_hub.engine, tenant.customer_id)
        time.sleep(0.5)
        received: list[int] = []
        with pytest.raises(grpc.RpcError) as failure:
            for response in call:
                received.extend(event.sequence for event in response.events)
        rich = rich_error(failure.value)
        assert (rich.code, rich.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW")
        assert received, "the events written before it fell behind still arrive"
        assert received == list(range(received[0], received[-1] + 1))
        assert rich.metadata["last_sequence"] == str(received[-1])
        assert received[-1] < final

        resumed = stub.SubscribeEvents(
            event_service_pb2.SubscribeEventsRequest(after_sequence=received[-1]), metadata=tenant.metadata, timeout=60
        )
        rest = []
        for response in resumed:
            rest.extend(event.sequence for event in response.events)
            if rest[-1] == final:
                break
        resumed.cancel()
        assert rest == list(range(received[-1] + 1, final + 1))


def test_the_client_resumes_a_subscription_that_fell_behind_and_sees_every_event_once(tuned_hub: Hub) -> None:
    tenant = new_tenant(tuned_hub)
    write_many(tuned_hub, tenant.metadata, 1)
    options = [("grpc.http2.bdp_probe", 0)]
    with ConvhubClient(tuned_hub.grpc_target, token=tenant.token, options=options) as client:
        events = client.subscribe_events(after_sequence=0)
        seen = [next(events).sequence]  # the stream is open...
        write_many(tuned_hub, tenant.metadata, WRITES)  # ...and its reader reads nothing meanwhile
        final = head(tuned_hub.engine, tenant.customer_id)
        time.sleep(0.5)
        for event in events:
            seen.append(event.sequence)
            if event.sequence == final:
                break
        events.close()
    assert seen == list(range(1, final + 1))


async def test_an_idle_sse_stream_gets_keepalive_comments(tuned_hub: Hub) -> None:
    tenant = new_tenant(tuned_hub)
    assert tuned_hub.http_base is not None
    headers = {"Authorization": f"Bearer {tenant.token}", "Accept": "text/event-stream"}
    async with (
        httpx.AsyncClient(base_url=tuned_hub.http_base, headers=headers, timeout=10) as rest,
        rest.stream("GET", "/v1.0/events:subscribe") as r,
    ):
        assert r.status_code == 200
        chunks: list[str] = []

        async def read_two_comments() -> None:
            async for chunk in r.aiter_text():
                chunks.append(chunk)
                if "".join(chunks).count(": keepalive\n\n") >= 2:
                    return

        await asyncio.wait_for(read_two_comments(), 10)
    assert "data:" not in "".join(chunks)
