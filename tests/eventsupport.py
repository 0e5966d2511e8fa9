"""Helpers for event-log tests: async stubs bound to a tenant, stream collectors, the log's head."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy import Engine, select

from convhub.server.store.models import Customer
from convhub.v1 import (
    common_pb2,
    event_pb2,
    event_service_pb2,
    event_service_pb2_grpc,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
)
from tests.support import SMS, TEL


def sms_request(peer: str = "+15550001111", text: str = "hello", self_: str = "+15559990000") -> Any:
    return ingest_service_pb2.IngestMessageRequest(
        channel=SMS,
        self=common_pb2.Address(type=TEL, target=self_),
        peer=common_pb2.Address(type=TEL, target=peer),
        text=text,
    )


def head(engine: Engine, customer_id: str) -> int:
    """The customer's newest event sequence (the outbox counter)."""
    with engine.connect() as conn:
        return int(conn.execute(select(Customer.event_seq).where(Customer.id == customer_id)).scalar_one())


async def head_async(engine: Engine, customer_id: str) -> int:
    """`head` off the event loop (a test engine must not wait for SQLite's write lock on the loop)."""
    return await asyncio.to_thread(head, engine, customer_id)


async def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Subscriber:
    """A SubscribeEvents stream read into `events` by a task, until cancelled or ended (then `error`)."""

    call: Any
    events: list[event_pb2.Event] = field(default_factory=list)
    error: grpc.RpcError | None = None
    task: asyncio.Task[None] | None = None

    @property
    def sequences(self) -> list[int]:
        return [e.sequence for e in self.events]

    async def _read(self) -> None:
        try:
            async for response in self.call:
                self.events.extend(response.events)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                self.error = err

    async def reached(self, sequence: int, timeout: float = 30.0) -> None:
        await wait_until(
            lambda: bool(self.events and self.events[-1].sequence >= sequence) or self.error is not None,
            timeout,
            f"sequence {sequence} (have {self.sequences[-3:]})",
        )
        if self.error is not None:
            raise AssertionError(f"stream failed: {self.error}")

    async def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):  # grpc.aio raises it into a cancelled call's reader
                await self.task


@dataclass
class EventsApi:
    """grpc.aio stubs for one tenant."""

    channel: grpc.aio.Channel
    metadata: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        self.events = event_service_pb2_grpc.EventServiceStub(self.channel)
        self.ingest = ingest_service_pb2_grpc.IngestServiceStub(self.channel)

    async def sms(self, peer: str = "+15550001111", text: str = "hello") -> Any:
        return await self.ingest.IngestMessage(sms_request(peer, text), metadata=self.metadata, timeout=30)

    async def subscribe(self, after: int | None = None, **filters: Any) -> Subscriber:
        request = event_service_pb2.SubscribeEventsRequest(**filters)
        if after is not None:
            request.after_sequence = after
        sub = Subscriber(self.events.SubscribeEvents(request, metadata=self.metadata))
        sub.task = asyncio.create_task(sub._read())
        return sub

    async def list(self, **fields: Any) -> Any:
        request = event_service_pb2.ListEventsRequest(**fields)
        return await self.events.ListEvents(request, metadata=self.metadata, timeout=30)
