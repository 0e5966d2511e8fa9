"""Observes every gRPC call: latency histogram by method and code, one access line, one server span.

Handlers are wrapped as they are registered (`GrpcCallObserver.observe(server)`
stands in for the server while services are added), so every service on the
server is covered (ours, health) without the transport knowing. Not a
`grpc.aio.ServerInterceptor`: with any interceptor installed grpc.aio runs an
interceptor chain of coroutines for every call, which alone cost ~20 µs a call
(a pass-through interceptor on an echo server, 200 → 220 µs of server CPU per
call), as much as everything below. Each method's handler is wrapped once; a
call then pays a clock read, one histogram observation on a label child
prepared for that method, and the log line or span only when those are
switched on. Client- and bidi-streaming handlers (reflection) pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from time import perf_counter
from typing import Any, cast

import grpc
from prometheus_client import Histogram

from convhub.server.observability.calls import CURRENT_CALL, CallRecord
from convhub.server.observability.logs import AccessLog
from convhub.server.observability.metrics import GRPC_CALL_SECONDS
from convhub.server.observability.tracing import GRPC_ERROR_CODES, ServerSpans, carrier_from_grpc_metadata

Context = grpc.aio.ServicerContext[Any, Any]
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}


def status_name(context: Context, exc: BaseException) -> str:
    """The status a failed call ends with: what the handler aborted with, else what gRPC will send."""
    if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):  # the client went away
        return "CANCELLED"
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if isinstance(code, int):
        return _CODE_NAMES.get(code, "UNKNOWN")
    return "UNKNOWN"


class _MethodObserver:
    """Everything one method's calls need, prepared once: its name, label children, switches."""

    def __init__(self, method: str, *, metrics: bool, access_log: AccessLog | None, spans: ServerSpans | None) -> None:
        self.method = method
        self.metrics = metrics
        self.access_log = access_log
        self.spans = spans
        self.record_calls = access_log is not None or spans is not None
        self._children: dict[str, Histogram] = {}
        service, _, name = method.lstrip("/").rpartition("/")
        self._span_attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}

    def start(self, context: Context) -> tuple[float, CallRecord | None, Any, Any, Any]:
        record = token = span = activation = None
        if self.record_calls:
            record = CallRecord()
            token = CURRENT_CALL.set(record)
        if self.spans is not None:
            carrier = carrier_from_grpc_metadata(context.invocation_metadata())
            span = self.spans.start(self.method, carrier, self._span_attributes)
            activation = self.spans.activate(span)
        return perf_counter(), record, token, span, activation

    def finish(self, context: Context, code: str, started: tuple[float, CallRecord | None, Any, Any, Any]) -> None:
        t0, record, token, span, activation = started
        seconds = perf_counter() - t0
        if self.metrics:
            child = self._children.get(code)
            if child is None:
                child = self._children[code] = GRPC_CALL_SECONDS.labels(self.method, code)
            child.observe(seconds)
        customer_id = record.customer_id if record is not None else None
        if self.access_log is not None:
            self.access_log.grpc(self.method, code, seconds, customer_id, context.peer())
        if span is not None and self.spans is not None:
            with contextlib.suppress(ValueError):  # a stream closed from another context
                self.spans.deactivate(activation)
            attributes: dict[str, Any] = {"rpc.grpc.status_code": code}
            if customer_id is not None:
                attributes["convhub.customer_id"] = customer_id
            self.spans.end(span, attributes, code in GRPC_ERROR_CODES)
        if token is not None:
            try:  # noqa: SIM105 (runs on every call: contextlib.suppress showed in profiles)
                CURRENT_CALL.reset(token)
            except ValueError:  # a stream closed from another context
                pass


class GrpcCallObserver:
    """Wraps each unary and server-streaming handler (once per method) to observe its calls."""

    def __init__(self, *, metrics: bool, access_log: AccessLog | None, spans: ServerSpans | None) -> None:
        self._options = {"metrics": metrics, "access_log": access_log, "spans": spans}
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def observe(self, server: grpc.aio.Server) -> grpc.aio.Server:
        """`server` for registering services: every handler added through it is observed."""
        return cast(grpc.aio.Server, _ObservedServer(server, self))

    def wrapped(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """`handler` of the full method name `method`, observed (built once per method and handler)."""
        cached = self._wrapped.get(method)
        if cached is None or cached[0] is not handler:
            cached = self._wrapped[method] = (handler, self._wrap(method, handler))
        return cached[1]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if handler.request_streaming:
            return handler
        unary, stream = handler.unary_unary, handler.unary_stream
        if unary is not None and inspect.iscoroutinefunction(unary):
            make, behavior = grpc.unary_unary_rpc_method_handler, _observed_unary
        elif stream is not None and inspect.isasyncgenfunction(stream):
            make, behavior = grpc.unary_stream_rpc_method_handler, _observed_stream  # type: ignore[assignment]
        else:
            return handler
        observer = _MethodObserver(method, **self._options)  # type: ignore[arg-type]
        return make(
            behavior(cast(Any, unary or stream), observer),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class _ObservedHandlers(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come back observed."""

    def __init__(self, handlers: grpc.GenericRpcHandler, observer: GrpcCallObserver) -> None:
        self._handlers = handlers
        self._observer = observer

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._handlers.service(handler_call_details)
        if handler is None:
            return None
        return self._observer.wrapped(handler_call_details.method, handler)


class _ObservedServer:
    """A grpc.aio.Server whose handler registrations are observed; everything else goes to the server."""

    def __init__(self, server: grpc.aio.Server, observer: GrpcCallObserver) -> None:
        self._server = server
        self._observer = observer

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers([_ObservedHandlers(h, self._observer) for h in generic_rpc_handlers])

    def add_registered_method_handlers(self, service_name: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """What generated `add_*Servicer_to_server` functions call besides add_generic_rpc_handlers."""
        wrap = self._observer.wrapped
        observed = {name: wrap(f"/{service_name}/{name}", handler) for name, handler in handlers.items()}
        cast(Any, self._server).add_registered_method_handlers(service_name, observed)  # not in grpc's stubs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


def _observed_unary(
    behavior: Callable[[Any, Context], Awaitable[Any]], observer: _MethodObserver
) -> Callable[[Any, Context], Awaitable[Any]]:
    async def observed(request: Any, context: Context) -> Any:
        started = observer.start(context)
        try:
            response = await behavior(request, context)
        except BaseException as exc:
            observer.finish(context, status_name(context, exc), started)
            raise
        observer.finish(context, "OK", started)
        return response

    return observed


def _observed_stream(
    behavior: Callable[[Any, Context], AsyncIterator[Any]], observer: _MethodObserver
) -> Callable[[Any, Context], AsyncIterator[Any]]:
    async def observed(request: Any, context: Context) -> AsyncIterator[Any]:
        started = observer.start(context)
        try:
            async for item in behavior(request, context):
                yield item
        except BaseException as exc:
            observer.finish(context, status_name(context, exc), started)
            raise
        observer.finish(context, "OK", started)

    return observed
