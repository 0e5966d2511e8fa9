"""Webhooks against a real `convhub serve` (SQLite and PostgreSQL) and real receivers on loopback.

The server runs with a short retry schedule and only 127.0.0.1/32 allowed
beside public addresses, so 127.0.0.2 (also loopback, routed locally) stands
for "a private address" that must never be reached.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import select, update

from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine
from convhub.server.store.models import Event, WebhookDelivery, WebhookEndpoint
from convhub.v1 import customer_service_pb2_grpc, webhook_pb2, webhook_service_pb2, webhook_service_pb2_grpc
from tests.conftest import BACKENDS, Tenant, create_database, start_server, stop_server
from tests.support import Api, Bound, expect_error
from tests.webhook_receiver import Received, Receiver, drain_output, run_receiver, wait_until

SCHEDULE = "0,0.3,0.3,0.3"  # four attempts, 0.3 s apart
WEBHOOK_ENV = {
    "CONVHUB_WEBHOOK_RETRY_SCHEDULE": SCHEDULE,
    "CONVHUB_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
    "CONVHUB_WEBHOOK_ROTATION_GRACE": "3600",
}
WAIT = 30.0  # generous bound for anything that normally takes well under a second

events_table = Event.__table__
deliveries_table = WebhookDelivery.__table__
endpoints_table = WebhookEndpoint.__table__
PENDING = webhook_pb2.WEBHOOK_DELIVERY_STATUS_PENDING
SUCCEEDED = webhook_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED
FAILED = webhook_pb2.WEBHOOK_DELIVERY_STATUS_FAILED


@dataclass
class WebhookHub:
    backend: str
    url: str
    grpc_target: str
    http_base: str
    channel: grpc.Channel
    engine: Any
    output: list[str]


@pytest.fixture(scope="module", params=BACKENDS)
def wh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookHub]:
    tmp: Path = tmp_path_factory.mktemp(f"webhooks-{request.param}")
    for url in create_database(request.param, tmp):
        proc, grpc_target, http_base, lines = start_server(url, data_dir=tmp, env=WEBHOOK_ENV)
        drain_output(proc, lines)
        engine = create_db_engine(url, pool_size=2)
        assert http_base is not None
        try:
            with grpc.insecure_channel(grpc_target) as channel:
                yield WebhookHub(request.param, url, grpc_target, http_base, channel, engine, lines)
        finally:
            engine.dispose()
            stop_server(proc)


@dataclass
class Client:
    tenant: Tenant
    api: Api
    webhooks: Any
    customers: Any
    http: httpx.Client

    def create(self, url: str, **fields: Any) -> webhook_pb2.WebhookEndpoint:
        endpoint = webhook_pb2.WebhookEndpoint(url=url, **fields)
        return self.webhooks.CreateWebhookEndpoint(
            webhook_service_pb2.CreateWebhookEndpointRequest(webhook_endpoint=endpoint)
        )

    def deliveries(self, endpoint_id: str, status: int = 0) -> list[webhook_pb2.WebhookDelivery]:
        out: list[webhook_pb2.WebhookDelivery] = []
        token = ""
        while True:
            page = self.webhooks.ListWebhookDeliveries(
                webhook_service_pb2.ListWebhookDeliveriesRequest(
                    webhook_endpoint_id=endpoint_id, status=status, page_token=token
                )
            )
            out.extend(page.result)
            token = page.next_page_token
            if not token:
                return out


def new_client(wh: WebhookHub) -> Client:
    customer_id = create_customer(wh.engine, f"wh-{time.monotonic_ns()}")
    tenant = Tenant(customer_id, create_token(wh.engine, customer_id).token)
    md = tenant.metadata
    http = httpx.Client(base_url=wh.http_base, headers={"authorization": f"Bearer {tenant.token}"}, timeout=10)
    return Client(
        tenant,
        Api.for_tenant(wh.channel, md),
        Bound(webhook_service_pb2_grpc.WebhookServiceStub(wh.channel), md),
        Bound(customer_service_pb2_grpc.CustomerServiceStub(wh.channel), md),
        http,
    )


@pytest.fixture
def client(wh: WebhookHub) -> Iterator[Client]:
    c = new_client(wh)
    yield c
    c.http.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with run_receiver() as r:
        yield r


def event_log(wh: WebhookHub, customer_id: str) -> list[Any]:
    with wh.engine.connect() as conn:
        return conn.execute(
            select(events_table.c.sequence, events_table.c.id, events_table.c.type)
            .where(events_table.c.customer_id == customer_id)
            .order_by(events_table.c.sequence)
        ).all()


# ---------------------------------------------------------------------------
# Endpoints: the resource, its secret, input checks


def test_secret_is_shown_only_on_create_and_rotate(wh: WebhookHub, client: Client, receiver: Receiver) -> None:
    created = client.create(receiver.base_url + "/hook", description="orders")
    assert created.secret.startswith("whsec_")
    assert len(base64.b64decode(created.secret.removeprefix("whsec_"))) >= 24
    got = client.webhooks.GetWebhookEndpoint(webhook_service_pb2.GetWebhookEndpointRequest(id=created.id))
    listed = client.webhooks.ListWebhookEndpoints(webhook_service_pb2.ListWebhookEndpointsRequest()).result
    assert got.secret == "" and [e.secret for e in listed] == [""]
    assert got.url == receiver.base_url + "/hook" and got.description == "orders"
    rest = client.http.get(f"/v1.0/webhook_endpoints/{created.id}").json()
    assert "secret" not in rest or rest["secret"] == ""
    rotated = client.http.post(f"/v1.0/webhook_endpoints/{created.id}:rotate_secret", json={}).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created.secret
    client.api.sms(text="no secrets in here")
    receiver.wait_for(lambda: len(receiver.delivered()) >= 3, WAIT, "deliveries")
    for secret in (created.secret, rotated["secret"]):
        assert all(secret.encode() not in r.body for r in receiver.received())
        with wh.engine.connect() as conn:
            payloads = conn.execute(select(events_table.c.payload)).scalars().all()
        assert all(secret.encode() not in p for p in payloads)


def test_create_with_the_same_request_id_returns_the_first_endpoint(client: Client, receiver: Receiver) -> None:
    request = webhook_service_pb2.CreateWebhookEndpointRequest(
        webhook_endpoint=webhook_pb2.WebhookEndpoint(url=receiver.base_url), request_id="create-1"
    )
    first = client.webhooks.CreateWebhookEndpoint(request)
    again = client.webhooks.CreateWebhookEndpoint(request)
    assert again.id == first.id and again.secret == ""


@pytest.mark.parametrize(
    "url",
    [
        "ftp://127.0.0.1/hook",
        "http://127.0.0.2:8080/hook",  # loopback outside the allowed 127.0.0.1/32
        "http://10.0.0.1/hook",
        "http://192.168.1.10/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://100.64.0.1/hook",
        "http://user:pw@127.0.0.1/hook",
        "http:///nohost",
        "",
        "http://does-not-resolve.invalid/hook",
    ],
)
def test_non_public_or_malformed_urls_are_refused_naming_url(client: Client, url: str) -> None:
    endpoint = webhook_pb2.WebhookEndpoint(url=url)
    expect_error(
        client.webhooks.CreateWebhookEndpoint,
        webhook_service_pb2.CreateWebhookEndpointRequest(webhook_endpoint=endpoint),
        grpc.StatusCode.INVALID_ARGUMENT,
        "webhook_endpoint.url",
    )


def test_update_and_rest_refuse_private_urls_too(client: Client, receiver: Receiver) -> None:
    created = client.create(receiver.base_url)
    expect_error(
        client.webhooks.UpdateWebhookEndpoint,
        webhook_service_pb2.UpdateWebhookEndpointRequest(
            webhook_endpoint=webhook_pb2.WebhookEndpoint(id=created.id, url="http://10.1.2.3/")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "webhook_endpoint.url",
    )
    response = client.http.post("/v1.0/webhook_endpoints", json={"url": "http://172.16.0.1/x"})
    assert response.status_code == 400
    assert "webhook_endpoint.url" in response.text
    response = client.http.put("/v1.0/customer", json={"webhook_method": "POST", "webhook_uri": "http://10.0.0.9/"})
    assert response.status_code == 400 and "customer.webhook_uri" in response.text
    got = client.webhooks.GetWebhookEndpoint(webhook_service_pb2.GetWebhookEndpointRequest(id=created.id))
    assert got.url == receiver.base_url


def test_bad_input_names_the_field(client: Client, receiver: Receiver) -> None:
    expect_error(
        client.webhooks.CreateWebhookEndpoint,
        webhook_service_pb2.CreateWebhookEndpointRequest(
            webhook_endpoint=webhook_pb2.WebhookEndpoint(url=receiver.base_url, event_types=["nope"])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "webhook_endpoint.event_types[0]",
    )
    expect_error(
        client.webhooks.ListWebhookDeliveries,
        webhook_service_pb2.ListWebhookDeliveriesRequest(webhook_endpoint_id="not-a-uuid"),
        grpc.StatusCode.INVALID_ARGUMENT,
        "webhook_endpoint_id",
    )
    response = client.http.put("/v1.0/customer", json={"webhook_method": "GET", "webhook_uri": receiver.base_url})
    assert response.status_code == 400 and "customer.webhook_method" in response.text


def test_another_customers_endpoint_is_not_found(wh: WebhookHub, client: Client, receiver: Receiver) -> None:
    theirs = new_client(wh).create(receiver.base_url)
    for call, request in [
        (client.webhooks.GetWebhookEndpoint, webhook_service_pb2.GetWebhookEndpointRequest(id=theirs.id)),
        (client.webhooks.RotateWebhookSecret, webhook_service_pb2.RotateWebhookSecretRequest(id=theirs.id)),
        (
            client.webhooks.ListWebhookDeliveries,
            webhook_service_pb2.ListWebhookDeliveriesRequest(webhook_endpoint_id=theirs.id),
        ),
        (client.webhooks.DeleteWebhookEndpoint, webhook_service_pb2.DeleteWebhookEndpointRequest(id=theirs.id)),
    ]:
        expect_error(call, request, grpc.StatusCode.NOT_FOUND)


# ---------------------------------------------------------------------------
# Delivery: body, signatures, filters


def test_events_arrive_signed_in_the_rest_shape(wh: WebhookHub, client: Client, receiver: Receiver) -> None:
    endpoint = client.create(receiver.base_url + "/in")
    result = client.api.sms(text="Is my order ready?")
    log = event_log(wh, client.tenant.customer_id)
    receiver.wait_for(lambda: len(receiver.delivered()) == len(log), WAIT, "every event")
    got = receiver.delivered()
    assert [r.webhook_id for r in got] == [e.id for e in log]
    for r, e in zip(got, log, strict=True):
        body = r.verify(endpoint.secret)  # the reference library (raises on a bad signature or timestamp)
        assert set(body) == {"type", "timestamp", "data"} and body["type"] == e.type
        assert body["timestamp"].endswith("Z")
        assert abs(int(r.headers["webhook-timestamp"]) - time.time()) < 300
        key = base64.b64decode(endpoint.secret.removeprefix("whsec_"))
        assert r.headers["x-voipbin-signature"] == hmac.new(key, r.body, hashlib.sha256).hexdigest()
        assert r.headers["content-type"] == "application/json"
    message = next(r.json for r in got if r.json["type"] == "conversation_message_created")
    rest = client.http.get(f"/v1.0/conversations/{result.conversation.id}/messages/{result.message.id}").json()
    assert message["data"] == rest  # the resource exactly as the REST API shows it
    assert message["data"]["direction"] == "incoming"
    tampered = Received(got[0].path, dict(got[0].headers), got[0].body + b" ", got[0].at)
    with pytest.raises(Exception, match="signature"):
        tampered.verify(endpoint.secret)


def test_event_type_filter_and_created_after_only(wh: WebhookHub, client: Client, receiver: Receiver) -> None:
    client.api.sms(text="before the endpoint existed")
    client.create(receiver.base_url, event_types=["conversation_message_created"])
    client.api.sms(text="after")
    client.api.sms(peer="+15550002222", text="another room")
    receiver.wait_for(lambda: len(receiver.delivered()) >= 2, WAIT, "two messages")
    time.sleep(1.5)  # nothing else may follow (bounded negative check)
    bodies = [r.json for r in receiver.delivered()]
    assert [b["type"] for b in bodies] == ["conversation_message_created"] * 2
    assert sorted(b["data"]["text"] for b in bodies) == ["after", "another room"]  # two rooms: any order


def test_secret_rotation_signs_with_both_secrets_during_grace(client: Client, receiver: Receiver) -> None:
    created = client.create(receiver.base_url)
    rotated = client.webhooks.RotateWebhookSecret(webhook_service_pb2.RotateWebhookSecretRequest(id=created.id))
    assert rotated.secret and rotated.secret != created.secret
    client.api.sms()
    receiver.wait_for(lambda: len(receiver.delivered()) >= 1, WAIT, "a delivery")
    r = receiver.delivered()[0]
    assert len(r.headers["webhook-signature"].split(" ")) == 2
    assert r.verify(created.secret) == r.verify(rotated.secret)  # old and new both verify
    key = base64.b64decode(rotated.secret.removeprefix("whsec_"))
    assert r.headers["x-voipbin-signature"] == hmac.new(key, r.body, hashlib.sha256).hexdigest()


def test_customer_webhook_uri_manages_one_default_endpoint(client: Client, receiver: Receiver) -> None:
    put = client.http.put("/v1.0/customer", json={"webhook_method": "POST", "webhook_uri": receiver.base_url + "/vb"})
    assert put.status_code == 200, put.text
    customer = client.http.get("/v1.0/customer").json()
    assert customer["webhook_method"] == "POST" and customer["webhook_uri"] == receiver.base_url + "/vb"
    assert customer["id"] == client.tenant.customer_id
    listed = client.http.get("/v1.0/webhook_endpoints").json()["result"]
    assert [(e["id"], e["customer_default"]) for e in listed] == [(customer["webhook_endpoint_id"], True)]
    client.http.put("/v1.0/customer", json={"webhook_uri": receiver.base_url + "/vb2"})
    assert len(client.http.get("/v1.0/webhook_endpoints").json()["result"]) == 1
    client.api.sms()
    receiver.wait_for(lambda: len(receiver.delivered("/vb2")) >= 3, WAIT, "deliveries to the default endpoint")
    secret = client.http.post(f"/v1.0/webhook_endpoints/{customer['webhook_endpoint_id']}:rotate_secret").json()
    assert secret["secret"].startswith("whsec_")
    client.http.put("/v1.0/customer", json={"webhook_uri": ""})
    customer = client.http.get("/v1.0/customer").json()
    assert customer["webhook_uri"] == "" and customer["webhook_method"] == ""
    assert client.http.get("/v1.0/webhook_endpoints").json()["result"] == []


# ---------------------------------------------------------------------------
# Failures: retries, Retry-After, 410, exhaustion and replay, SSRF at delivery time


def test_endpoint_down_then_back_delivers_every_event_in_order(
    wh: WebhookHub, client: Client, receiver: Receiver
) -> None:
    down = threading.Event()
    down.set()
    receiver.respond = lambda r: (503, {}) if down.is_set() else (200, {})
    client.create(receiver.base_url)
    room = client.api.sms(text="m0").conversation.id
    for i in range(1, 5):
        client.api.sms(text=f"m{i}")
    receiver.wait_for(lambda: len(receiver.received()) >= 3, WAIT, "failed attempts")
    down.clear()
    log = event_log(wh, client.tenant.customer_id)
    receiver.wait_for(lambda: len(receiver.delivered()) == len(log), WAIT, "every event once the endpoint is back")
    time.sleep(0.5)
    ids = [r.webhook_id for r in receiver.delivered()]
    assert ids == [e.id for e in log]  # each exactly once, in sequence order (one conversation)
    assert all(r.json["data"].get("conversation_id", room) == room for r in receiver.delivered())


def test_a_failing_conversation_holds_back_only_itself(wh: WebhookHub, client: Client, receiver: Receiver) -> None:
    stuck_peer = "+15550003333"  # appears in every event of that conversation, and in no other
    broken = threading.Event()
    broken.set()
    receiver.respond = lambda r: (500, {}) if broken.is_set() and stuck_peer in r.body.decode() else (200, {})
    client.create(receiver.base_url)
    stuck_room = client.api.sms(peer=stuck_peer, text="a1").conversation.id
    client.api.sms(peer=stuck_peer, text="a2")
    for i in range(3):
        client.api.sms(peer="+15550004444", text=f"b{i}")
    # The other conversation gets all 8 of its events (created, participant, 3 messages created + received).
    receiver.wait_for(lambda: len(receiver.delivered()) == 8, WAIT, "the healthy conversation")
    assert all(stuck_peer not in r.body.decode() for r in receiver.delivered())
    broken.clear()
    endpoint_id = client.webhooks.ListWebhookEndpoints(webhook_service_pb2.ListWebhookEndpointsRequest()).result[0].id
    wait_until(lambda: PENDING not in {d.status for d in client.deliveries(endpoint_id)}, what="every delivery settled")
    seq = {e.id: e.sequence for e in event_log(wh, client.tenant.customer_id)}
    stuck_attempts = [seq[r.webhook_id] for r in receiver.received() if stuck_peer in r.body.decode()]
    # A later event of the stuck conversation is never tried before an earlier one is settled.
    assert stuck_attempts == sorted(stuck_attempts) and len(set(stuck_attempts)) == 6, stuck_attempts
    assert any(stuck_room in r.body.decode() for r in receiver.delivered())  # it recovered


def test_a_heads_followers_are_given_back_while_it_waits_to_retry(
    wh: WebhookHub, client: Client, receiver: Receiver
) -> None:
    """A chain head is leased with its next deliveries (store.webhooks.claim_due); when the head must wait for a
    retry, the followers' leases are released at once, not left to run out (15 s), so whichever replica
    settles the head can send them next."""
    receiver.respond = lambda r: (503, {"Retry-After": "60"})
    client.create(receiver.base_url)
    client.api.sms(text="one conversation, several events")
    receiver.wait_for(lambda: len(receiver.received()) >= 1, WAIT, "the head's failed attempt")

    def pending() -> list[Any]:
        with wh.engine.connect() as conn:
            return conn.execute(
                select(deliveries_table.c.head, deliveries_table.c.locked_by).where(
                    deliveries_table.c.customer_id == client.tenant.customer_id,
                    deliveries_table.c.status == "pending",
                )
            ).all()

    assert len(pending()) >= 3  # a head and followers
    wait_until(lambda: all(not row.locked_by for row in pending()), timeout=5, what="every lease given back")
    assert len(receiver.received()) == 1  # the followers were not sent behind the failed head


def test_retry_after_is_honoured(client: Client, receiver: Receiver) -> None:
    answers = iter([(429, {"Retry-After": "2"})])
    receiver.respond = lambda r: next(answers, (200, {}))
    endpoint = client.create(receiver.base_url, event_types=["conversation_created"])
    client.api.sms()
    receiver.wait_for(lambda: len(receiver.delivered()) == 1, WAIT, "the retried delivery")
    first, second = receiver.received()
    assert first.webhook_id == second.webhook_id
    assert second.at - first.at >= 1.9  # the schedule alone would retry after 0.3 s
    # The emitter records the outcome after the receiver has answered: wait for it, not for the receiver.
    wait_until(lambda: client.deliveries(endpoint.id)[0].status == SUCCEEDED, what="the delivery recorded")
    [d] = client.deliveries(endpoint.id)
    assert d.status == SUCCEEDED and d.attempts == 2


def test_410_disables_the_endpoint_until_it_is_enabled_again(client: Client, receiver: Receiver) -> None:
    gone = threading.Event()
    gone.set()
    receiver.respond = lambda r: (410, {}) if gone.is_set() else (200, {})
    endpoint = client.create(receiver.base_url, event_types=["conversation_message_created"])
    client.api.sms(text="one")

    def disabled() -> bool:
        got = client.webhooks.GetWebhookEndpoint(webhook_service_pb2.GetWebhookEndpointRequest(id=endpoint.id))
        return got.disabled

    wait_until(disabled, what="the endpoint to be disabled")
    got = client.webhooks.GetWebhookEndpoint(webhook_service_pb2.GetWebhookEndpointRequest(id=endpoint.id))
    assert "410" in got.disabled_reason
    client.api.sms(text="two")
    time.sleep(1.5)
    assert len(receiver.received()) == 1  # nothing is sent to a disabled endpoint
    gone.clear()
    response = client.http.put(f"/v1.0/webhook_endpoints/{endpoint.id}", json={"disabled": False})
    assert response.status_code == 200 and response.json()["disabled_reason"] == ""
    receiver.wait_for(lambda: len(receiver.delivered()) == 2, WAIT, "the backlog after re-enabling")
    assert [r.json["data"]["text"] for r in receiver.delivered()] == ["one", "two"]


def test_exhausted_delivery_is_failed_listed_and_retryable(client: Client, receiver: Receiver) -> None:
    receiver.respond = lambda r: (500, {})
    endpoint = client.create(receiver.base_url, event_types=["conversation_created"])
    client.api.sms()

    def failed() -> list[webhook_pb2.WebhookDelivery]:
        return client.deliveries(endpoint.id, FAILED)

    wait_until(lambda: len(failed()) == 1, what="the delivery to fail")
    [d] = failed()
    assert d.attempts == 4 and d.last_response_code == 500 and "500" in d.last_error
    assert len(receiver.received()) == 4  # one per step of the schedule
    listed = client.http.get(f"/v1.0/webhook_endpoints/{endpoint.id}/deliveries", params={"status": "failed"})
    assert [x["id"] for x in listed.json()["result"]] == [d.id]
    assert listed.json()["result"][0]["status"] == "failed"
    receiver.respond = lambda r: (200, {})
    retried = client.http.post(f"/v1.0/webhook_endpoints/{endpoint.id}/deliveries/{d.id}:retry")
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    receiver.wait_for(lambda: len(receiver.delivered()) == 1, WAIT, "the replay")
    assert receiver.delivered()[0].webhook_id == receiver.received()[0].webhook_id == d.event_id
    wait_until(lambda: [x.status for x in client.deliveries(endpoint.id)] == [SUCCEEDED], what="the recorded success")


def test_address_is_checked_again_at_delivery_time(wh: WebhookHub, client: Client, receiver: Receiver) -> None:
    endpoint = client.create(receiver.base_url, event_types=["conversation_created"])
    with run_receiver("127.0.0.2") as private:
        # What a DNS change would do: the stored name now leads to a non-public address.
        with wh.engine.begin() as conn:
            conn.execute(
                update(endpoints_table).where(endpoints_table.c.id == endpoint.id).values(url=private.base_url)
            )
        client.api.sms()
        wait_until(lambda: [d.status for d in client.deliveries(endpoint.id)] == [FAILED], what="the refusals")
        [d] = client.deliveries(endpoint.id)
        assert "refused" in d.last_error and d.last_response_code == 0
        assert private.received() == [] and receiver.received() == []


def test_a_hanging_endpoint_slows_neither_other_endpoints_nor_the_api(
    wh: WebhookHub, client: Client, receiver: Receiver
) -> None:
    release = threading.Event()

    def respond(r: Received) -> tuple[int, dict[str, str]]:
        if r.path == "/hang":
            release.wait(30)
        return 200, {}

    receiver.respond = respond
    client.create(receiver.base_url + "/hang")
    client.create(receiver.base_url + "/fast")
    try:
        slowest = 0.0
        for i in range(20):
            t0 = time.monotonic()
            client.api.sms(peer=f"+1555001{i:04d}", text=f"m{i}")
            slowest = max(slowest, time.monotonic() - t0)
        n = len(event_log(wh, client.tenant.customer_id))
        # Serialised behind the hanging endpoint, this would take n x 5 s; here it takes well under a second.
        receiver.wait_for(lambda: len(receiver.delivered("/fast")) == n, 20, "the healthy endpoint")
        assert receiver.delivered("/hang") == []
        assert slowest < 3.0, slowest  # typical: ~10 ms
    finally:
        release.set()


def test_message_received_has_the_voipbin_docs_shape(client: Client, receiver: Receiver) -> None:
    """Issue 7: data = {conversation_id, message: {id, participant, channel, text, direction, tm_create}}."""
    endpoint = client.create(receiver.base_url + "/in", event_types=["conversation_message_received"])
    sms = client.api.sms(peer="+15550003333", text="Is my order ready?")
    line_peer = "U" + "ab" * 16
    r = client.http.post(
        "/v1.0/conversation_messages:ingest",
        json={
            "channel": "line",
            "self": {"type": "line", "target": "U" + "cd" * 16},
            "peer": {"type": "line", "target": line_peer},
            "text": "こんにちは",
        },
    )
    assert r.status_code == 200, r.text
    receiver.wait_for(lambda: len(receiver.delivered()) >= 2, WAIT, "two received events")
    got = [received.verify(endpoint.secret) for received in receiver.delivered()]
    assert [b["type"] for b in got] == ["conversation_message_received"] * 2
    for body in got:
        assert set(body) == {"type", "timestamp", "data"}
        assert set(body["data"]) == {"conversation_id", "message"}
        assert set(body["data"]["message"]) == {"id", "participant", "channel", "text", "direction", "tm_create"}
    # Two conversations: their deliveries run concurrently, so they may arrive in either order.
    sms_body, line_body = sorted((b["data"] for b in got), key=lambda data: data["message"]["channel"] == "line")
    rest = client.http.get(f"/v1.0/conversations/{sms.conversation.id}/messages/{sms.message.id}").json()
    assert sms_body == {
        "conversation_id": sms.conversation.id,
        "message": {
            "id": sms.message.id,
            "participant": {"type": "tel", "target": "+15550003333"},
            "channel": "message",
            "text": "Is my order ready?",
            "direction": "inbound",
            "tm_create": rest["tm_create"],
        },
    }
    assert line_body["conversation_id"] == r.json()["conversation"]["id"]
    assert line_body["message"]["participant"] == {"type": "line", "target": line_peer}
    assert (line_body["message"]["channel"], line_body["message"]["text"]) == ("line", "こんにちは")


def test_at_most_sixteen_attempts_in_flight_per_endpoint_while_more_are_leased(
    wh: WebhookHub, client: Client, receiver: Receiver
) -> None:
    # 40 conversations, so 40 chain heads are due at once: more than the 16 attempts an endpoint
    # may have in flight (server/events/webhooks/emitter.py PER_ENDPOINT), which the emitter
    # leases ahead of time but must not send until a slot frees.
    release = threading.Event()
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def respond(r: Received) -> tuple[int, dict[str, str]]:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        release.wait(4)  # within the 5 s attempt timeout
        with lock:
            in_flight -= 1
        return 200, {}

    receiver.respond = respond
    client.create(receiver.base_url + "/bounded")
    try:
        for i in range(40):
            client.api.sms(peer=f"+1555002{i:04d}", text=f"m{i}")
        receiver.wait_for(lambda: len(receiver.received()) >= 16, WAIT, "the first 16 attempts")
        time.sleep(1.0)  # room for a 17th to arrive if the bound were broken
        assert len(receiver.received()) == 16 and most == 16
    finally:
        release.set()
    log = event_log(wh, client.tenant.customer_id)
    receiver.wait_for(lambda: len(receiver.delivered()) == len(log), WAIT, "every event")
    ids = [r.webhook_id for r in receiver.delivered()]
    assert sorted(ids) == sorted(e.id for e in log)  # each once
    assert most <= 16
    by_room: dict[str, list[str]] = {}
    for r in receiver.delivered():
        data = r.json["data"]
        by_room.setdefault(data.get("conversation_id") or data["id"], []).append(r.webhook_id)
    order = {e.id: i for i, e in enumerate(log)}
    assert all(ids_ == sorted(ids_, key=order.__getitem__) for ids_ in by_room.values())
