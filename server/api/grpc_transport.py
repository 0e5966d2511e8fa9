"""gRPC transport: generic grpc.aio handlers for every dispatcher method.

The only gRPC-specific work is here: reading the bearer token from metadata
and turning ApiError into a status with `grpc-status-details-bin`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.message import Message

from convhub.server.api.dispatch import Dispatcher, Method
from convhub.server.api.errors import ApiError, internal_status

log = logging.getLogger("convhub.grpc")
_DETAILS_KEY = "grpc-status-details-bin"


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if isinstance(exc, ApiError):
        status = exc.to_status()
    else:
        log.exception("unexpected error in %s", method, exc_info=exc)
        status = internal_status()
    await context.abort(
        grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == status.code)),
        status.message,
        trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),),
    )


def _unary(dispatcher: Dispatcher, method: Method) -> Callable[..., Coroutine[Any, Any, Message]]:
    async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            return await dispatcher.call(method, request, bearer_token(context))
        except Exception as exc:
            await _abort(context, exc, method.full_name)
            raise  # unreachable: abort raises

    return handle


def _streaming(dispatcher: Dispatcher, method: Method) -> Callable[..., AsyncIterator[Message]]:
    async def handle(request: Message, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message]:
        try:
            async for item in dispatcher.stream(method, request, bearer_token(context)):
                yield item
        except Exception as exc:
            await _abort(context, exc, method.full_name)

    return handle


def generic_handlers(dispatcher: Dispatcher) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in dispatcher.methods.values():
        service = method.descriptor.containing_service.full_name
        if method.server_streaming:
            handler = grpc.unary_stream_rpc_method_handler(
                _streaming(dispatcher, method),
                request_deserializer=method.request_cls.FromString,
                response_serializer=method.response_cls.SerializeToString,
            )
        else:
            handler = grpc.unary_unary_rpc_method_handler(
                _unary(dispatcher, method),
                request_deserializer=method.request_cls.FromString,
                response_serializer=method.response_cls.SerializeToString,
            )
        by_service.setdefault(service, {})[method.descriptor.name] = handler
    return [grpc.method_handlers_generic_handler(name, handlers) for name, handlers in by_service.items()]
