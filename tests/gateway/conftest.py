"""A real uvicorn server on loopback serving the test-only `gwtest.v1.EchoService`.

Nothing in the gateway knows this proto: annotating an RPC is all it takes to
expose it. The handlers record the request they got, so tests can check what
the HTTP call turned into.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).parent / "protos"))

from gwtest.v1 import echo_pb2  # noqa: E402

from convhub.server.api.dispatch import Caller, Dispatcher, collect_methods  # noqa: E402
from convhub.server.api.errors import ApiError, InvalidArgument, NotFound, Unauthenticated  # noqa: E402
from convhub.server.gateway import build_gateway_app  # noqa: E402

GOOD = "good"


def api_error(code_name: str, message: str = "boom") -> ApiError:
    cls = type(f"Err_{code_name}", (ApiError,), {"code": grpc.StatusCode[code_name]})
    err: ApiError = cls(message)
    return err


class EchoHandlers:
    """Test handlers: each records its last request under the method name."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}

    def _seen(self, name: str, req: Any) -> None:
        self.last[name] = req

    def GetItem(self, req: echo_pb2.GetItemRequest, caller: Caller) -> echo_pb2.Item:
        self._seen("GetItem", req)
        if req.id == "missing":
            raise NotFound("item", req.id)
        item = echo_pb2.Item(
            id=req.id,
            display_name=f"item {req.id}",
            color=echo_pb2.COLOR_DARK_BLUE,
            big_count=2**40,
            colors=[echo_pb2.COLOR_RED, echo_pb2.COLOR_DARK_BLUE],
            labels={"k": "v"},
            secrets={"api_key": "s3cret"},
        )
        item.tm_create.FromSeconds(1_700_000_000)
        item.inner.label = caller.customer_id
        return item

    def GetSpecialItem(self, req: echo_pb2.Empty, caller: Caller) -> echo_pb2.Item:
        return echo_pb2.Item(id="the-special-one")

    def ListItems(self, req: echo_pb2.ListItemsRequest, caller: Caller) -> echo_pb2.ListItemsResponse:
        self._seen("ListItems", req)
        if req.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        return echo_pb2.ListItemsResponse(result=[echo_pb2.Item(id=i) for i in req.ids], next_page_token="next")

    def GetShelf(self, req: echo_pb2.ShelfRequest, caller: Caller) -> echo_pb2.Shelf:
        self._seen("GetShelf", req)
        return echo_pb2.Shelf(name=req.name, note=req.note)

    def CreateItem(self, req: echo_pb2.CreateItemRequest, caller: Caller) -> echo_pb2.Item:
        self._seen("CreateItem", req)
        item = echo_pb2.Item()
        item.CopyFrom(req.item)
        item.id = "new"
        item.shelf_name = req.shelf
        return item

    def UpdateItem(self, req: echo_pb2.UpdateItemRequest, caller: Caller) -> echo_pb2.EchoResponse:
        self._seen("UpdateItem", req)
        return echo_pb2.EchoResponse(request=echo_pb2.EchoRequest(item=req.item), update_mask=list(req.update_mask.paths))

    def Echo(self, req: echo_pb2.EchoRequest, caller: Caller) -> echo_pb2.EchoResponse:
        self._seen("Echo", req)
        return echo_pb2.EchoResponse(request=req)

    def Ingest(self, req: echo_pb2.EchoRequest, caller: Caller) -> echo_pb2.EchoResponse:
        self._seen("Ingest", req)
        return echo_pb2.EchoResponse(request=req, update_mask=["ingested"])

    def Fail(self, req: echo_pb2.FailRequest, caller: Caller) -> echo_pb2.Empty:
        if req.code == "CRASH":
            raise RuntimeError("secret internal detail")
        if req.code == "UNAUTHENTICATED":
            raise Unauthenticated()
        if req.code == "INVALID_ARGUMENT":
            raise InvalidArgument("item.count", "must be positive")
        raise api_error(req.code)

    def Sleep(self, req: echo_pb2.SleepRequest, caller: Caller) -> echo_pb2.Empty:
        time.sleep(req.seconds)
        return echo_pb2.Empty()

    async def Watch(self, req: echo_pb2.WatchRequest, caller: Caller) -> AsyncIterator[echo_pb2.Tick]:
        self._seen("Watch", req)
        if req.count < 0:
            raise InvalidArgument("count", "must not be negative")
        for n in range(req.count):
            yield echo_pb2.Tick(n=n, color=echo_pb2.COLOR_RED)
            if req.interval:
                await asyncio.sleep(req.interval)
        if req.fail_with:
            raise api_error(req.fail_with, "stream broke")

    def Hidden(self, req: echo_pb2.Empty, caller: Caller) -> echo_pb2.Empty:
        return echo_pb2.Empty()


class TokenAuth:
    def authenticate(self, token: str) -> Caller | None:
        return Caller("c1") if token == GOOD else None


class Readiness:
    def __init__(self) -> None:
        self.ready = True

    def __call__(self) -> bool:
        return self.ready


MAX_BODY = 4096


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
    app = build_gateway_app(gw_dispatcher, max_body_bytes=MAX_BODY, ready=gw_readiness)
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
