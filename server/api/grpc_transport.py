"""gRPC transport: generic grpc.aio handlers for every dispatcher method.

The only gRPC-specific work is here: decoding the request bytes, reading the
bearer token from metadata and turning ApiError into a status with
`grpc-status-details-bin`.

Requests are decoded here rather than by grpc (`request_deserializer`): a
message grpc cannot decode (invalid UTF-8, a corrupt wire format, nesting past
the decoder's limit) would otherwise answer UNKNOWN and log a traceback per
call, a cheap way to flood the log. Here it is INVALID_ARGUMENT, not logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from convhub.server.api.credentials import single_token
from convhub.server.api.dispatch import Dispatcher, Encoded, Method
from convhub.server.errors import ApiError, InvalidArgument, internal_status
from convhub.server.observability.error_log import log_unexpected

log = logging.getLogger("convhub.grpc")
_DETAILS_KEY = "grpc-status-details-bin"


def bearer_token(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The call's API token; two different `authorization` values are INVALID_ARGUMENT (credentials.py)."""
    metadata = context.invocation_metadata() or ()
    return single_token((k, v) for k, v in metadata if k == "authorization" and isinstance(v, str))


def decode_request(method: Method, data: bytes) -> Message:
    """The request message from its wire bytes; undecodable bytes are INVALID_ARGUMENT."""
    try:
        return method.request_cls.FromString(data)
    except DecodeError as exc:
        # upb's message names the type and the defect (bad UTF-8, corrupt wire format, too deep), never the data.
        raise InvalidArgument("request", f"cannot decode: {exc}", reason="UNDECODABLE_REQUEST") from None


async def _abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    if isinstance(exc, ApiError):
        status = exc.to_status()
    else:
        log_unexpected(log, method, exc)
        status = internal_status()
    await context.abort(
        grpc.StatusCode(next(c for c in grpc.StatusCode if c.value[0] == status.code)),
        status.message,
        trailing_metadata=((_DETAILS_KEY, status.SerializeToString()),),
    )


def _unary(dispatcher: Dispatcher, method: Method) -> Callable[..., Coroutine[Any, Any, Message]]:
    async def handle(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> Message:
        try:
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            return await dispatcher.call(method, decode_request(method, data), bearer_token(context), deadline)
        except Exception as exc:
            await _abort(context, exc, method.full_name)
            raise  # unreachable: abort raises

    return handle


def _streaming(dispatcher: Dispatcher, method: Method) -> Callable[..., AsyncIterator[Message | Encoded]]:
    async def handle(data: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Message | Encoded]:
        try:
            async for item in dispatcher.stream(method, decode_request(method, data), bearer_token(context)):
                yield item
        except Exception as exc:
            await _abort(context, exc, method.full_name)

    return handle


def _stream_serializer(message_cls: type[Message]) -> Callable[[Message | Encoded], bytes]:
    """Serializes a streamed message; an `Encoded` one is written as it is."""
    serialize = message_cls.SerializeToString

    def serializer(item: Message | Encoded) -> bytes:
        return item.wire if type(item) is Encoded else serialize(item)  # type: ignore[arg-type]

    return serializer


def generic_handlers(dispatcher: Dispatcher) -> list[grpc.GenericRpcHandler]:
    by_service: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
    for method in dispatcher.methods.values():
        service = method.descriptor.containing_service.full_name
        if method.server_streaming:
            handler = grpc.unary_stream_rpc_method_handler(
                _streaming(dispatcher, method),
                request_deserializer=None,  # raw bytes: decode_request answers what cannot be decoded
                response_serializer=_stream_serializer(method.response_cls),
            )
        else:
            handler = grpc.unary_unary_rpc_method_handler(
                _unary(dispatcher, method),
                request_deserializer=None,  # raw bytes: decode_request answers what cannot be decoded
                response_serializer=method.response_cls.SerializeToString,
            )
        by_service.setdefault(service, {})[method.descriptor.name] = handler
    return [grpc.method_handlers_generic_handler(name, handlers) for name, handlers in by_service.items()]
