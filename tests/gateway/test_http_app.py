"""The composed HTTP app: provider hooks under /v1.0/hooks, the /metrics slot, health, and the gateway beside them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from gwsupport import GOOD
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from convhub.server.api.dispatch import Dispatcher
from convhub.server.gateway import Gateway
from convhub.server.http_app import build_http_app
from convhub.server.http_server import ConnectionLimits, HttpServer


async def receive_sms(request: Request) -> Response:
    """What a channel module's webhook looks like: its own route, its own parsing."""
    body = await request.body()
    return PlainTextResponse(f"{request.path_params['account_id']}:{body.decode()}")


async def metrics(request: Request) -> Response:
    """Stands in for observability's /metrics page."""
    return PlainTextResponse("convhub_up 1\n")


@pytest.fixture(scope="module")
async def composed(gw_dispatcher: Dispatcher) -> AsyncIterator[httpx.AsyncClient]:
    app = build_http_app(
        Gateway(gw_dispatcher),
        hook_routes=[Route("/twilio/{account_id}", receive_sms, methods=["POST"])],
        extra_routes=[Route("/metrics", metrics, methods=["GET"])],
    )
    server = HttpServer(app, ConnectionLimits(header_timeout=10, keepalive_timeout=5, max_connections=100))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await server.start(sock)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        yield client
    await server.drain(asyncio.get_running_loop().time() + 5, lambda: None)


async def test_hook_routes_are_mounted_under_v1_hooks(composed: httpx.AsyncClient) -> None:
    r = await composed.post("/v1.0/hooks/twilio/AC123", content=b"Body=hi")
    assert r.status_code == 200 and r.text == "AC123:Body=hi"


async def test_unknown_hook_paths_get_the_json_404(composed: httpx.AsyncClient) -> None:
    r = await composed.post("/v1.0/hooks/nope/1")
    assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND"


async def test_extra_routes_are_served_at_their_paths(composed: httpx.AsyncClient) -> None:
    r = await composed.get("/metrics")
    assert r.status_code == 200 and r.text == "convhub_up 1\n"


async def test_gateway_health_and_openapi_beside_the_mounted_routes(composed: httpx.AsyncClient) -> None:
    assert (await composed.get("/healthz")).json() == {"status": "ok"}
    assert (await composed.get("/readyz")).json() == {"status": "ready"}
    assert (await composed.get("/v1.0/openapi.json")).json()["openapi"].startswith("3.")
    r = await composed.get("/v1/items/7", headers={"Authorization": f"Bearer {GOOD}"})
    assert r.status_code == 200 and r.json()["id"] == "7"


async def test_without_hooks_or_metrics_those_paths_are_gateway_404s(gw_url: str) -> None:
    async with httpx.AsyncClient(base_url=gw_url, timeout=10) as client:
        for path in ("/metrics", "/v1.0/hooks/twilio/AC123"):
            r = await client.get(path)
            assert r.status_code == 404 and r.json()["error"]["status"] == "NOT_FOUND", path
