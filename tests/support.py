"""Test helpers: typed stubs bound to a tenant's token, rich-error inspection, a health watcher."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import httpx
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import select

from convhub.server.store.models import Base
from convhub.v1 import (
    account_service_pb2_grpc,
    common_pb2,
    conversation_service_pb2_grpc,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
)

if TYPE_CHECKING:
    from tests.conftest import Hub

SMS = common_pb2.CONVERSATION_TYPE_MESSAGE
TEL = common_pb2.ADDRESS_TYPE_TEL


class Bound:
    """A stub whose calls carry the tenant's bearer token."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self._stub = stub
        self._metadata = metadata

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("metadata", self._metadata)
            kwargs.setdefault("timeout", 10)
            return method(request, **kwargs)

        return call


@dataclass
class Api:
    conversations: Any
    accounts: Any
    ingest: Any

    @classmethod
    def for_tenant(cls, channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> Api:
        return cls(
            Bound(conversation_service_pb2_grpc.ConversationServiceStub(channel), metadata),
            Bound(account_service_pb2_grpc.AccountServiceStub(channel), metadata),
            Bound(ingest_service_pb2_grpc.IngestServiceStub(channel), metadata),
        )

    def sms(
        self, peer: str = "+15550001111", self_: str = "+15559990000", text: str = "hello", **fields: Any
    ) -> ingest_service_pb2.IngestMessageResponse:
        """Ingest an inbound SMS from `peer` to `self_`."""
        request = ingest_service_pb2.IngestMessageRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target=self_),
            peer=common_pb2.Address(type=TEL, target=peer),
            text=text,
            **fields,
        )
        return self.ingest.IngestMessage(request)


@dataclass
class RichError:
    code: grpc.StatusCode
    message: str
    reason: str
    fields: list[str]
    metadata: dict[str, str] = field(default_factory=dict)  # ErrorInfo.metadata


def rich_error(err: grpc.RpcError) -> RichError:
    """Decode google.rpc.Status details from a failed call (sync or grpc.aio)."""
    reason = ""
    fields: list[str] = []
    metadata: dict[str, str] = {}
    for key, value in err.trailing_metadata() or ():  # type: ignore[attr-defined]
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                fields.extend(v.field for v in bad.field_violations)
    return RichError(err.code(), err.details(), reason, fields, metadata)  # type: ignore[attr-defined]


def expect_error(fn: Any, request: Any, code: grpc.StatusCode, field: str | None = None) -> RichError:
    """Call and assert it fails with `code` (and names `field` when given)."""
    try:
        fn(request)
    except grpc.RpcError as err:
        rich = rich_error(err)
    else:
        raise AssertionError(f"expected {code.name}, call succeeded")
    assert rich.code == code, (rich.code, rich.message)
    if field is not None:
        assert field in rich.fields, (field, rich.fields, rich.message)
    return rich


def tenant_snapshot(engine: Any, customer_id: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row the customer owns, per table, in primary-key order: equal snapshots mean nothing was written."""
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if "customer_id" in table.c:
                query = select(table).where(table.c.customer_id == customer_id).order_by(*table.primary_key.columns)
                snapshot[table.name] = [tuple(row) for row in conn.execute(query)]
        customers = Base.metadata.tables["customers"]
        snapshot["customers"] = [tuple(r) for r in conn.execute(select(customers).where(customers.c.id == customer_id))]
    return snapshot


def varint(n: int) -> bytes:
    """Protobuf's base-128 varint, for writing wire bytes by hand (damaged or too deep to build otherwise)."""
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass
class HealthWatch:
    """Probes gRPC health and REST /healthz back to back in a thread, recording the slowest answer."""

    hub: Hub
    slowest: float = 0.0
    answered: int = 0
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> HealthWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        assert self.hub.http_base is not None
        with self.hub.channel() as channel, httpx.Client(base_url=self.hub.http_base, timeout=30) as http:
            health = health_pb2_grpc.HealthStub(channel)
            while not self._stop.is_set():
                for probe in (
                    lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == 1,
                    lambda: http.get("/healthz").status_code == 200,
                ):
                    started = time.monotonic()
                    try:
                        ok = probe()
                    except Exception as exc:
                        ok, self.failures = False, [*self.failures, repr(exc)]
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    self.answered += ok
                self._stop.wait(0.05)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds taken, the result or the RpcError raised)."""
    started = time.monotonic()
    try:
        result = fn()
    except grpc.RpcError as err:
        result = err
    return time.monotonic() - started, result
