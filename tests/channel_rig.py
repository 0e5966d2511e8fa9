"""Shared set-up for channel tests: a real `convhub serve` pointed at the Twilio stand-in, and a tenant's view of it.

Hooks are signed with the official `twilio` package's RequestValidator (a
test-only dependency), never with convhub's own verifier, so a mistake in
the verifier cannot cancel out in the test. Signatures are computed over
PUBLIC_URL (what CONVHUB_PUBLIC_URL says providers see), while requests go
to the server's real loopback address, as they would through a proxy.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from convhub.server.store.db import create_db_engine
from convhub.server.store.models import DeliveryJob, Event
from convhub.v1 import event_pb2
from tests.conftest import BACKENDS, Hub, Tenant, create_database, new_tenant, start_server, stop_server
from tests.twilio_standin import TwilioStandIn

PUBLIC_URL = "https://hub.example.test"
WAIT = 20.0  # generous bound for background delivery on a loaded 2-core machine


def provider_env(standin: TwilioStandIn, public_url: str = PUBLIC_URL) -> dict[str, str]:
    """Settings pointing every provider API at the stand-in (never the real providers: the stand-in
    answers 404 to Telnyx and LINE paths, a final failure) and the public URL hooks are signed over."""
    return {
        "CONVHUB_PUBLIC_URL": public_url,
        "CONVHUB_TWILIO_API_URL": standin.url,
        "CONVHUB_TELNYX_API_URL": standin.url,
        "CONVHUB_LINE_API_URL": standin.url,
        "CONVHUB_LINE_DATA_API_URL": standin.url,
    }


def channel_env(standin: TwilioStandIn, **overrides: str) -> dict[str, str]:
    """Settings for a server whose providers are the stand-in, with fast retries and polling."""
    env = {
        **provider_env(standin),
        "CONVHUB_DELIVERY_BACKOFF_MIN": "0.05",
        "CONVHUB_DELIVERY_BACKOFF_MAX": "0.2",
        "CONVHUB_DELIVERY_MAX_ATTEMPTS": "4",
        "CONVHUB_DELIVERY_POLL_INTERVAL": "0.1",
        "CONVHUB_PROVIDER_TIMEOUT": "1",
        "CONVHUB_DELIVERY_LEASE": "8",
        "CONVHUB_SWEEP_INTERVAL": "0.2",
    }
    env.update(overrides)
    return env


def start_hub(backend: str, url: str, data_dir: Path, env: dict[str, str]) -> Hub:
    proc, grpc_target, http_base, lines = start_server(url, data_dir=data_dir, env=env)
    return Hub(backend, url, grpc_target, http_base, proc, lines, create_db_engine(url, pool_size=2), data_dir=data_dir)


def close_hub(hub: Hub) -> None:
    hub.engine.dispose()
    stop_server(hub.process)


@pytest.fixture(scope="module")
def standin() -> Iterator[TwilioStandIn]:
    server = TwilioStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def chub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, standin: TwilioStandIn
) -> Iterator[Hub]:
    """A server per backend (module scope) delivering to the stand-in."""
    tmp_dir = tmp_path_factory.mktemp(f"channels-{request.param}")
    for url in create_database(request.param, tmp_dir):
        hub = start_hub(request.param, url, tmp_dir, channel_env(standin))
        try:
            yield hub
        finally:
            close_hub(hub)


def new_number() -> str:
    return f"+1555{random.randrange(10**6, 10**7)}"


class Rig:
    """One fresh tenant on a channel hub, talking REST like a customer and posting hooks like Twilio."""

    def __init__(self, hub: Hub, standin: TwilioStandIn, tenant: Tenant) -> None:
        assert hub.http_base is not None
        self.hub = hub
        self.standin = standin
        self.tenant = tenant
        self.rest = httpx.Client(
            base_url=hub.http_base, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=15
        )
        self.anonymous = httpx.Client(base_url=hub.http_base, timeout=15)

    def close(self) -> None:
        self.rest.close()
        self.anonymous.close()

    # --- accounts ---------------------------------------------------------

    def twilio_account(self, number: str | None = None, **fields: Any) -> dict[str, Any]:
        """A Twilio account known to the stand-in; returns the account plus its `sid`, `token`, `number`."""
        sid, token = self.standin.new_account()
        number = number or new_number()
        body = {
            "type": "sms",
            "name": "twilio",
            "address": {"type": "tel", "target": number},
            "credentials": {"account_sid": sid, "auth_token": token},
            **fields,
        }
        r = self.rest.post("/v1.0/conversation_accounts", json=body)
        assert r.status_code == 200, r.text
        return {**r.json(), "sid": sid, "token": token, "number": number}

    # --- hooks ------------------------------------------------------------

    def hook(
        self,
        account: dict[str, Any],
        params: dict[str, str],
        *,
        suffix: str = "",
        token: str | None = None,
        signature: str | None = None,
    ) -> httpx.Response:
        path = f"/v1.0/hooks/twilio/{account['id']}{suffix}"
        if signature is None:
            signature = RequestValidator(token or account["token"]).compute_signature(PUBLIC_URL + path, params)
        headers = {"X-Twilio-Signature": signature} if signature else {}
        return self.anonymous.post(path, data=params, headers=headers)

    def inbound(
        self, account: dict[str, Any], peer: str, text: str = "hello", *, sid: str | None = None, **extra: str
    ) -> httpx.Response:
        params = {
            "MessageSid": sid or f"SM{random.getrandbits(128):032x}",
            "AccountSid": account["sid"],
            "From": peer,
            "To": account["number"],
            "Body": text,
            "NumMedia": "0",
            **extra,
        }
        return self.hook(account, params)

    def status_callback(self, account: dict[str, Any], sid: str, status: str, **extra: str) -> httpx.Response:
        params = {"MessageSid": sid, "MessageStatus": status, "AccountSid": account["sid"], **extra}
        return self.hook(account, params, suffix="/status")

    # --- conversations and messages ---------------------------------------

    def conversations(self) -> list[dict[str, Any]]:
        r = self.rest.get("/v1.0/conversations")
        assert r.status_code == 200, r.text
        result: list[dict[str, Any]] = r.json()["result"]
        return result

    def messages(self, conversation_id: str) -> list[dict[str, Any]]:
        r = self.rest.get(f"/v1.0/conversations/{conversation_id}/messages")
        assert r.status_code == 200, r.text
        result: list[dict[str, Any]] = r.json()["result"]
        return result

    def send(self, conversation_id: str, text: str = "Your order has been shipped!", **body: Any) -> dict[str, Any]:
        r = self.rest.post(f"/v1.0/conversations/{conversation_id}/messages", json={"text": text, **body})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def message(self, conversation_id: str, message_id: str) -> dict[str, Any]:
        r = self.rest.get(f"/v1.0/conversations/{conversation_id}/messages/{message_id}")
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def wait_message(
        self,
        message: dict[str, Any],
        until: Callable[[dict[str, Any]], bool] = lambda m: m["status"] != "progressing",
        timeout: float = WAIT,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            current = self.message(message["conversation_id"], message["id"])
            if until(current) or time.monotonic() > deadline:
                return current
            time.sleep(0.05)

    def events(self) -> list[event_pb2.Event]:
        events = Event.__table__
        with self.hub.engine.connect() as conn:
            payloads = conn.execute(
                select(events.c.payload)
                .where(events.c.customer_id == self.tenant.customer_id)
                .order_by(events.c.sequence)
            ).scalars()
            return [event_pb2.Event.FromString(p) for p in payloads]

    def event_types(self) -> list[str]:
        return [event_pb2.EventType.Name(e.type).removeprefix("EVENT_TYPE_").lower() for e in self.events()]

    def jobs(self) -> list[Any]:
        jobs = DeliveryJob.__table__
        with self.hub.engine.connect() as conn:
            return list(conn.execute(select(jobs).where(jobs.c.customer_id == self.tenant.customer_id)).all())


@pytest.fixture
def rig(chub: Hub, standin: TwilioStandIn) -> Iterator[Rig]:
    r = Rig(chub, standin, new_tenant(chub))
    yield r
    r.close()
