"""The one handler layer both transports call.

gRPC (`grpc_transport.py`) and the REST shim (`convhub.server.gateway`) both
resolve a method by its full name (`/convhub.v1.ConversationService/GetConversation`),
authenticate the caller's token and call the same handler. Unary handlers are
plain synchronous functions doing database work; they run on a bounded thread
pool so a slow query never stalls the event loop that serves other calls.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from convhub.server.api.errors import Unauthenticated


@dataclass(frozen=True)
class Caller:
    """Who is calling: every handler scopes its reads and writes to this customer."""

    customer_id: str


UnaryHandler = Callable[[Any, Caller], Message]
StreamHandler = Callable[[Any, Caller], AsyncIterator[Message]]


class TokenAuthenticator(Protocol):
    def authenticate(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None when it is unknown or revoked."""


@dataclass(frozen=True)
class Method:
    """One RPC: its descriptor, message classes and the handler serving it."""

    full_name: str
    descriptor: MethodDescriptor
    request_cls: type[Message]
    response_cls: type[Message]
    handler: Callable[..., Any]
    server_streaming: bool


def message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def collect_methods(services: Iterable[tuple[ServiceDescriptor, object]]) -> dict[str, Method]:
    """Pair every RPC of each service descriptor with the same-named method of its handler object.

    A missing handler is a start-up error, so the contract and the code cannot drift apart.
    """
    methods: dict[str, Method] = {}
    for service, handlers in services:
        for md in service.methods:
            if md.client_streaming:
                raise TypeError(f"{md.full_name}: client streaming is not supported")
            fn = getattr(handlers, md.name, None)
            if fn is None:
                raise TypeError(f"{type(handlers).__name__} has no handler for {md.full_name}")
            if md.server_streaming and not inspect.isasyncgenfunction(fn):
                raise TypeError(f"{md.full_name} is server-streaming: its handler must be an async generator")
            full_name = f"/{service.full_name}/{md.name}"
            methods[full_name] = Method(
                full_name=full_name,
                descriptor=md,
                request_cls=message_class(md.input_type),
                response_cls=message_class(md.output_type),
                handler=fn,
                server_streaming=md.server_streaming,
            )
    return methods


class Dispatcher:
    """Authenticates a token and runs a method's handler; transports add only their wire format."""

    def __init__(
        self,
        methods: dict[str, Method],
        authenticator: TokenAuthenticator,
        executor: ThreadPoolExecutor,
        services: Iterable[ServiceDescriptor] = (),
    ) -> None:
        self.methods = methods
        self.services = list(services)
        self._authenticator = authenticator
        self._executor = executor

    async def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise Unauthenticated("missing API token")
        caller = await self.run_blocking(self._authenticator.authenticate, token)
        if caller is None:
            raise Unauthenticated("invalid API token")
        return caller

    async def run_blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def call(self, method: Method, request: Message, token: str | None) -> Message:
        """Run a unary method; raises ApiError for anything the caller got wrong."""
        caller = await self.authenticate(token)
        result: Message = await self.run_blocking(method.handler, request, caller)
        return result

    async def stream(self, method: Method, request: Message, token: str | None) -> AsyncIterator[Message]:
        """Run a server-streaming method: authenticate first, then yield its messages."""
        caller = await self.authenticate(token)
        async for item in method.handler(request, caller):
            yield item
