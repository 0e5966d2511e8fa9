"""The one handler layer both transports call.

gRPC (`grpc_transport.py`) and the REST shim (`convhub.server.gateway`) both
resolve a method by its full name (`/convhub.v1.ConversationService/GetConversation`),
authenticate the caller's token and call the same handler.

Unary handlers are plain synchronous functions doing short database work.
Where they run is decided per method: *inline* on the event loop when the
work cannot wait on a lock (reads marked `@may_run_on_loop`, and SQLite
transactions, which take the write lock without waiting there and move to a
thread when another process holds it: store/sqlite_locks.py), otherwise on a
bounded thread pool so a write waiting on another replica's row lock never
stalls the loop. Inline calls skip the thread hop and the GIL hand-offs it
costs (measured: reads on threads cut GetConversation on PostgreSQL by ~20 %);
a database that stops answering stalls an inline read at most once, for the
read timeout, before the breaker answers for it (store/breaker.py).

Each call carries its deadline into its transaction (store/commit_gate.py): a
write whose caller gave up does not commit. Faults of the database, not of the
request, answer UNAVAILABLE (retryable) with reason DATABASE_UNAVAILABLE,
DATABASE_BUSY or SHUTTING_DOWN.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from convhub.server.api.request_rules import check_request
from convhub.server.errors import DeadlineExceeded, Unauthenticated, Unavailable
from convhub.server.observability.calls import note_customer
from convhub.server.store.commit_gate import CallDeadline, enter_call_deadline, leave_call_deadline
from convhub.server.store.faults import DeadlinePassed, WriteWouldWait, classify

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Caller:
    """Who is calling: every handler scopes its reads and writes to this customer."""

    customer_id: str


class Authenticator(Protocol):
    """What the dispatcher needs to know about tokens: whose they are."""

    def authenticate(self, token: str) -> Caller | None:
        """The caller a token belongs to, or None. Called on the event loop: must not wait on locks."""


class Encoded:
    """A streamed message already in its wire form, e.g. framed from stored bytes without a message built.

    A server-streaming handler may yield these beside messages: the gRPC
    transport writes `wire` as it is, the REST shim decodes `message()`.
    """

    __slots__ = ("message_cls", "wire")

    def __init__(self, message_cls: type[Message], wire: bytes) -> None:
        self.message_cls = message_cls
        self.wire = wire

    def message(self) -> Message:
        return self.message_cls.FromString(self.wire)


def may_run_on_loop(fn: F) -> F:
    """Mark a handler that never waits on a lock (reads only), so it may run inline on the event loop."""
    fn.convhub_may_run_on_loop = True  # type: ignore[attr-defined]
    return fn


@dataclass(frozen=True)
class Method:
    """One RPC: its descriptor, message classes, the handler serving it and where that runs."""

    full_name: str
    descriptor: MethodDescriptor
    request_cls: type[Message]
    response_cls: type[Message]
    handler: Callable[..., Any]
    server_streaming: bool
    inline: bool
    is_async: bool  # a coroutine handler: awaited on the loop, does its own scheduling


def message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)


def collect_methods(
    services: Iterable[tuple[ServiceDescriptor, object]], *, inline_writes: bool = False
) -> dict[str, Method]:
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
                inline=inline_writes or getattr(fn, "convhub_may_run_on_loop", False),
                is_async=inspect.iscoroutinefunction(fn),
            )
    return methods


class Dispatcher:
    """Authenticates a token and runs a method's handler; transports add only their wire format."""

    def __init__(
        self,
        methods: dict[str, Method],
        authenticator: Authenticator,
        executor: ThreadPoolExecutor,
        services: Iterable[ServiceDescriptor] = (),
    ) -> None:
        self.methods = methods
        self.services = list(services)
        self._authenticator = authenticator
        self._executor = executor

    def authenticate(self, token: str | None) -> Caller:
        if not token:
            raise Unauthenticated("missing API token")
        try:
            caller = self._authenticator.authenticate(token)
        except Exception as exc:
            answer = _answer_for(exc)
            if answer is exc:
                raise
            raise answer from exc
        if caller is None:
            raise Unauthenticated("invalid API token")
        note_customer(caller.customer_id)  # for the call's log line and span
        return caller

    async def call(self, method: Method, request: Message, token: str | None, deadline: float | None = None) -> Message:
        """Run a unary method; raises ApiError for anything the caller got wrong or the database could not do.

        `deadline` is the caller's (`time.monotonic()` seconds): a write still
        running when it passes does not commit (store/commit_gate.py).
        """
        caller = self.authenticate(token)
        check_request(request)  # text, Struct and declared limits on every field (request_rules.py)
        # Plain set/reset and try/except, not context managers: this runs on every call (~1 us, not ~6).
        call_deadline = CallDeadline(deadline)
        entered = enter_call_deadline(call_deadline)
        try:
            if method.is_async:
                return await method.handler(request, caller)
            if method.inline:
                try:
                    return method.handler(request, caller)
                except WriteWouldWait:
                    pass  # SQLite's write lock is taken: wait for it on a thread, not here
            # In the call's context: the thread sees the deadline, and its database spans join the trace.
            context = contextvars.copy_context()
            work = asyncio.get_running_loop().run_in_executor(
                self._executor, context.run, method.handler, request, caller
            )
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:  # the caller gave up (deadline, cancellation)
                if call_deadline.abandon():
                    work.add_done_callback(_outcome_unwanted)
                    raise  # the thread may run on, but its commit is refused
                return await work  # its commit was claimed first: answer with the result
        except Exception as exc:
            answer = _answer_for(exc)
            if answer is exc:
                raise
            raise answer from exc
        finally:
            leave_call_deadline(entered)

    async def stream(self, method: Method, request: Message, token: str | None) -> AsyncIterator[Message | Encoded]:
        """Run a server-streaming method: authenticate first, then yield its messages."""
        caller = self.authenticate(token)
        check_request(request)  # text, Struct and declared limits on every field (request_rules.py)
        try:
            async for item in method.handler(request, caller):
                yield item
        except Exception as exc:  # a database fault mid-stream is UNAVAILABLE too (resume), not INTERNAL
            answer = _answer_for(exc)
            if answer is exc:
                raise
            raise answer from exc


def _outcome_unwanted(work: asyncio.Future[Any]) -> None:
    """Retrieve an abandoned call's outcome, so asyncio does not log it as never retrieved."""
    if not work.cancelled():
        work.exception()


def _answer_for(exc: Exception) -> Exception:
    """What a call raising `exc` answers: a fault of the database, not of the request, is UNAVAILABLE
    (retryable), not INTERNAL; a deadline that passed before commit is DEADLINE_EXCEEDED (nothing
    was written); anything else stays itself.
    """
    fault = classify(exc)
    if fault is None:
        return exc
    if isinstance(fault, DeadlinePassed):
        return DeadlineExceeded("deadline exceeded before the write committed; nothing was written")
    return Unavailable(f"{fault.message}; retry", reason=fault.reason)
