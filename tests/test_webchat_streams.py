"""Visitor streams leave nothing behind when closed, and end at once when the server stops.

Measured from outside the server like tests/test_event_cleanup.py (the
task probe wrapper, /proc, pg_stat_activity).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from tests.conftest import BACKENDS, new_tenant, running_hub
from tests.support import Api
from tests.test_event_cleanup import PROBE_LAUNCHER, ProbedHub, back_to, settle, steady
from tests.webchat_support import create_webchat_account, open_session, start_chat


@pytest.fixture(scope="module", params=BACKENDS)
def probed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbedHub]:
    tmp_dir = tmp_path_factory.mktemp(f"webchat-probed-{request.param}")
    probe = tmp_dir / "tasks"
    env = {"CONVHUB_TEST_TASK_PROBE": str(probe)}
    for hub in running_hub(request.param, tmp_dir, env=env, launcher=PROBE_LAUNCHER):
        yield ProbedHub(hub, probe)


async def test_opening_and_closing_visitor_streams_leaves_no_task_subscription_or_connection(
    probed: ProbedHub,
) -> None:
    hub = probed.hub
    assert hub.http_base is not None
    tenant = new_tenant(hub)
    with grpc.insecure_channel(hub.grpc_target) as channel, httpx.Client(base_url=hub.http_base) as http:
        account = create_webchat_account(Api.for_tenant(channel, tenant.metadata).accounts)
        chatting = start_chat(http, account.widget_key, "history to replay")
        silent = open_session(http, account.widget_key)  # no conversation yet: a stream that only waits

    async def open_and_close(count: int) -> None:
        async with httpx.AsyncClient(base_url=hub.http_base or "", timeout=10) as web:
            for i in range(count):
                token = silent.token if i % 3 == 2 else chatting.token
                params = {"visitor_token": token}
                if i % 3 == 1:
                    params["after"] = "999999"  # beyond the log: refused before any subscription
                async with web.stream("GET", "/v1.0/webchat/events", params=params) as response:
                    if i % 3 == 1:
                        assert response.status_code == 400
                        continue
                    assert response.status_code == 200
                    await anext(response.aiter_bytes())  # the retry line, then closed by the client

    await open_and_close(15)  # fills the pools first: not a leak
    baseline = await steady(probed)
    assert baseline.subscriptions == 0
    await open_and_close(120)
    after = await settle(probed, baseline)
    assert back_to(after, baseline), (after, baseline)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_shutdown_ends_visitor_streams_at_once(tmp_path_factory: pytest.TempPathFactory, backend: str) -> None:
    for hub in running_hub(backend, tmp_path_factory.mktemp(f"webchat-shutdown-{backend}")):
        assert hub.http_base is not None
        tenant = new_tenant(hub)
        with grpc.insecure_channel(hub.grpc_target) as channel, httpx.Client(base_url=hub.http_base) as http:
            account = create_webchat_account(Api.for_tenant(channel, tenant.metadata).accounts)
            session = start_chat(http, account.widget_key, "hello")
            waiting = open_session(http, account.widget_key)
        async with httpx.AsyncClient(base_url=hub.http_base, timeout=30) as web:
            streams = [
                web.stream("GET", "/v1.0/webchat/events", params={"visitor_token": token})
                for token in (session.token, waiting.token)
            ]
            responses = [await s.__aenter__() for s in streams]
            try:
                assert [r.status_code for r in responses] == [200, 200]
                started = time.monotonic()
                hub.process.send_signal(signal.SIGTERM)
                bodies = await asyncio.gather(*(r.aread() for r in responses))
            finally:
                for s in streams:
                    await s.__aexit__(None, None, None)
            await asyncio.to_thread(hub.process.wait, 30)
            stopped_after = time.monotonic() - started
        assert b'"text":"hello"' in bodies[0]
        assert stopped_after < 8, f"stopping took {stopped_after:.1f} s: visitor streams held the drain"


def test_an_expired_token_ends_its_stream_and_reads_or_writes_nothing_more_but_brings_the_visitor_back(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ttl = 5
    env = {"CONVHUB_WEBCHAT_TOKEN_TTL": str(ttl), "CONVHUB_SSE_KEEPALIVE": "0"}  # silence: a stuck stream times out
    for hub in running_hub("sqlite", tmp_path_factory.mktemp("webchat-expiry"), env=env):
        assert hub.http_base is not None
        tenant = new_tenant(hub)
        with grpc.insecure_channel(hub.grpc_target) as channel, httpx.Client(base_url=hub.http_base) as http:
            account = create_webchat_account(Api.for_tenant(channel, tenant.metadata).accounts)
            session = start_chat(http, account.widget_key, "hello")
            started = time.monotonic()
            with http.stream(
                "GET", "/v1.0/webchat/events", params={"visitor_token": session.token}, timeout=ttl + 10
            ) as stream:
                assert stream.status_code == 200
                body = stream.read()  # ends by itself when the token expires
            lasted = time.monotonic() - started
            assert b'"text":"hello"' in body
            assert ttl - 2 < lasted < ttl + 5, lasted
            assert http.post("/v1.0/webchat/messages", json={"text": "late"}, headers=session.auth).status_code == 401
            refused = http.get("/v1.0/webchat/events", params={"visitor_token": session.token})
            assert refused.status_code == 401
            back = open_session(http, account.widget_key, returning=session.token)  # within the return window
            assert (back.visitor_id, back.conversation_id) == (session.visitor_id, session.conversation_id)
