"""The gRPC observer in-process: the code each call ends with (unary and streaming), and its span.

A grpc.aio server on loopback with test handlers that succeed, abort, crash and
stream, observed by `GrpcCallObserver`; spans go to the SDK's in-memory exporter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from convhub.server.observability.calls import note_customer
from convhub.server.observability.grpc_calls import GrpcCallObserver
from convhub.server.observability.metrics import REGISTRY
from convhub.server.observability.tracing import ServerSpans

SERVICE = "obs.test.v1.Probe"


async def ok(request: bytes, context: Any) -> bytes:
    note_customer("customer-1")
    return request


async def not_found(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("unreachable")


async def crash(request: bytes, context: Any) -> bytes:
    raise RuntimeError("boom")


async def three(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for n in range(3):
        yield bytes([n])


async def endless(request: bytes, context: Any) -> AsyncIterator[bytes]:
    while True:
        yield b"."
        await asyncio.sleep(0.01)


def count(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "convhub_grpc_server_call_duration_seconds_count", {"grpc_method": f"/{SERVICE}/{method}", "grpc_code": code}
    )
    return value or 0.0


@pytest.fixture
async def probe() -> AsyncIterator[tuple[grpc.aio.Channel, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    observer = GrpcCallObserver(metrics=True, access_log=None, spans=ServerSpans(provider))
    server = grpc.aio.server()
    unary = {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in [("Ok", ok), ("Gone", not_found)]}
    unary["Crash"] = grpc.unary_unary_rpc_method_handler(crash)
    streams = {name: grpc.unary_stream_rpc_method_handler(fn) for name, fn in [("Three", three), ("Endless", endless)]}
    observer.observe(server).add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(SERVICE, {**unary, **streams})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel, exporter
    await server.stop(0)
    provider.shutdown()


async def test_each_call_is_counted_with_the_code_it_ended_with(
    probe: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, _ = probe
    before = {key: count(*key) for key in [("Ok", "OK"), ("Gone", "NOT_FOUND"), ("Crash", "UNKNOWN")]}
    before |= {key: count(*key) for key in [("Three", "OK"), ("Endless", "CANCELLED")]}
    assert await channel.unary_unary(f"/{SERVICE}/Ok")(b"x", timeout=10) == b"x"
    for method, code in [("Gone", grpc.StatusCode.NOT_FOUND), ("Crash", grpc.StatusCode.UNKNOWN)]:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await channel.unary_unary(f"/{SERVICE}/{method}")(b"x", timeout=10)
        assert failed.value.code() == code
    assert [item async for item in channel.unary_stream(f"/{SERVICE}/Three")(b"x", timeout=10)] == [b"\0", b"\1", b"\2"]
    endless_call = channel.unary_stream(f"/{SERVICE}/Endless")(b"x", timeout=10)
    await endless_call.read()
    endless_call.cancel()  # the client walks away mid-stream
    for _ in range(200):  # the server notices the cancellation asynchronously
        if count("Endless", "CANCELLED") > before[("Endless", "CANCELLED")]:
            break
        await asyncio.sleep(0.02)
    after = {key: count(*key) for key in before}
    assert {key: after[key] - before[key] for key in before} == dict.fromkeys(before, 1.0)


async def test_each_call_gets_a_server_span_with_its_code_and_customer(
    probe: tuple[grpc.aio.Channel, InMemorySpanExporter],
) -> None:
    channel, exporter = probe
    await channel.unary_unary(f"/{SERVICE}/Ok")(b"x", timeout=10)
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary(f"/{SERVICE}/Crash")(b"x", timeout=10)
    spans = {span.name: span for span in exporter.get_finished_spans()}
    good, bad = spans[f"/{SERVICE}/Ok"], spans[f"/{SERVICE}/Crash"]
    assert good.kind == SpanKind.SERVER and good.status.status_code == StatusCode.UNSET
    assert good.attributes is not None and bad.attributes is not None
    assert (good.attributes["rpc.service"], good.attributes["rpc.method"]) == (SERVICE, "Ok")
    assert good.attributes["rpc.grpc.status_code"] == "OK" and good.attributes["convhub.customer_id"] == "customer-1"
    assert bad.attributes["rpc.grpc.status_code"] == "UNKNOWN" and bad.status.status_code == StatusCode.ERROR
