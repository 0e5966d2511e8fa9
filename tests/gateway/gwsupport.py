"""Test-only handlers and helpers for the `gwtest.v1.EchoService` the gateway tests serve.

Nothing in the gateway knows this proto: annotating an RPC is all it takes to
expose it. The handlers record the request they got, so tests can check what
the HTTP call turned into. (A module of its own rather than conftest.py: test
modules import from it, and `conftest` is not a unique module name.)
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).parent / "protos"))

from gwtest.v1 import echo_pb2

from convhub.server.api.dispatch import Caller
from convhub.server.errors import ApiError, InvalidArgument, NotFound, Unauthenticated

GOOD = "good"


def api_error(code_name: str, message: str = "boom") -> ApiError:
    cls = type(f"Err_{code_name}", (ApiError,), {"code": grpc.StatusCode[code_name]})
    err: ApiError = cls(message)
    return err


class EchoHandlers:
    """Test handlers: each records its last request under the method name."""

    def __init__(self) -> None:
        self.last: dict[str, Any] = {}
        self.streams_closed = 0

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
        return echo_pb2.EchoResponse(
            request=echo_pb2.EchoRequest(item=req.item), update_mask=list(req.update_mask.paths)
        )

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
        if req.code not in grpc.StatusCode.__members__ or req.code == "OK":
            raise InvalidArgument("code", "not a gRPC status code name")
        raise api_error(req.code)

    def Sleep(self, req: echo_pb2.SleepRequest, caller: Caller) -> echo_pb2.Empty:
        if not 0 <= req.seconds <= 1:
            raise InvalidArgument("seconds", "must be between 0 and 1")
        time.sleep(req.seconds)
        return echo_pb2.Empty()

    async def Watch(self, req: echo_pb2.WatchRequest, caller: Caller) -> AsyncIterator[echo_pb2.Tick]:
        self._seen("Watch", req)
        if not 0 <= req.count <= 100_000 or not 0 <= req.interval <= 1 or req.count * req.interval > 5:
            raise InvalidArgument("count", "at most 100000 items, at most 1 s apart, at most 5 s in all")
        if req.fail_with and req.fail_with not in grpc.StatusCode.__members__:
            raise InvalidArgument("fail_with", "not a gRPC status code name")
        try:
            for n in range(req.count):
                yield echo_pb2.Tick(n=n, color=echo_pb2.COLOR_RED)
                if req.interval:
                    await asyncio.sleep(req.interval)
        finally:
            self.streams_closed += 1
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
