"""A real uvicorn server on loopback serving the test-only `gwtest.v1.EchoService` (see gwsupport.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import uvicorn
from gwsupport import GOOD, MAX_BODY, EchoHandlers, Readiness, TokenAuth, echo_pb2

from convhub.server.api.dispatch import Dispatcher, collect_methods
from convhub.server.gateway import Gateway
from convhub.server.http_app import build_http_app


@pytest.fixture(scope="session")
def gw_handlers() -> EchoHandlers:
    return EchoHandlers()


@pytest.fixture(scope="session")
def gw_readiness() -> Readiness:
    return Readiness()


@pytest.fixture(scope="session")
def gw_dispatcher(gw_handlers: EchoHandlers) -> Dispatcher:
    service = echo_pb2.DESCRIPTOR.services_by_name["EchoService"]
    methods = collect_methods([(service, gw_handlers)])
    return Dispatcher(methods, TokenAuth(), ThreadPoolExecutor(8), [service])


@pytest.fixture(scope="session")
async def gw_url(gw_dispatcher: Dispatcher, gw_readiness: Readiness) -> AsyncIterator[str]:
    app = build_http_app(Gateway(gw_dispatcher, MAX_BODY), ready=gw_readiness)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture(scope="session")
async def gw(gw_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An authenticated client (Bearer token)."""
    async with httpx.AsyncClient(base_url=gw_url, headers={"Authorization": f"Bearer {GOOD}"}, timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
async def anon(gw_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client without credentials."""
    async with httpx.AsyncClient(base_url=gw_url, timeout=10) as client:
        yield client


# --- the real `convhub serve` (tests/conftest.py's `hub`), over REST ---------------------


@pytest.fixture
def base(hub: Any) -> str:
    if hub.http_base is None:
        pytest.skip("the test server runs without its REST port (tests/conftest.py: HTTP_ENABLED)")
    result: str = hub.http_base
    return result


@pytest.fixture
def rest(base: str, tenant: Any) -> Iterator[httpx.Client]:
    """A client authenticated as a fresh tenant (Bearer header)."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=10) as client:
        yield client
