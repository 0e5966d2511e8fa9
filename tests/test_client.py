"""The Python client, against real gRPC servers on loopback (no grpc mocks).

Part 1 runs each client (sync and async, same test bodies) against a small
scripted server started here: it can fail a method with UNAVAILABLE a set
number of times, answer NOT_FOUND with rich status details, stall past a
deadline, echo the auth header and serve a list in three pages, so retry,
backoff, deadlines, error mapping, auth and page walking are exercised over
a real HTTP/2 connection. Part 2 drives the real convhub server.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent import futures
from typing import Any, TypeAlias

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from convhub.client import (
    AsyncConvhubClient,
    ConvhubClient,
    ConvhubError,
    DeadlineExceededError,
    NotFoundError,
    RetryPolicy,
    UnauthenticatedError,
    UnavailableError,
)
from convhub.client.retry import Deadline
from convhub.v1 import (
    account_pb2,
    account_service_pb2,
    account_service_pb2_grpc,
    common_pb2,
    conversation_pb2,
    conversation_service_pb2,
    conversation_service_pb2_grpc,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    message_pb2,
    participant_pb2,
)

TOKEN = "secret-token"
FAST = RetryPolicy(initial_backoff=0.01, max_backoff=0.02, jitter=0.0)

# ---------------------------------------------------------------------------
# Scripted server
# ---------------------------------------------------------------------------


class Script:
    """Shared state of the scripted server: injected failures and what it saw."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail: Counter[str] = Counter()  # key -> UNAVAILABLE answers still to give
        self.calls: Counter[str] = Counter()  # key -> attempts seen
        self.request_ids: defaultdict[str, list[str]] = defaultdict(list)
        self.target = ""

    def reset(self) -> None:
        with self.lock:
            self.fail.clear()
            self.calls.clear()
            self.request_ids.clear()

    def attempt(self, key: str, context: grpc.ServicerContext, request_id: str | None = None) -> None:
        """Count an attempt; abort with UNAVAILABLE while failures remain for `key`."""
        with self.lock:
            self.calls[key] += 1
            if request_id is not None:
                self.request_ids[key].append(request_id)
            failing = self.fail[key] > 0
            if failing:
                self.fail[key] -= 1
        if failing:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")


def _not_found_status(id: str) -> status_pb2.Status:
    info, bad = any_pb2.Any(), any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason="CONVERSATION_NOT_FOUND", domain="convhub.v1", metadata={"id": id}))
    bad.Pack(
        error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field="id", description="no such thing")]
        )
    )
    return status_pb2.Status(code=code_pb2.NOT_FOUND, message=f"conversation {id} not found", details=[info, bad])


PAGE_ITEMS = [f"c{i}" for i in range(7)]  # page_size 3 -> pages of 3, 3, 1


class Conversations(conversation_service_pb2_grpc.ConversationServiceServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    def GetConversation(
        self, request: conversation_service_pb2.GetConversationRequest, context: grpc.ServicerContext
    ) -> conversation_pb2.Conversation:
        self.s.attempt(request.id, context)
        if request.id.startswith("missing"):
            context.abort_with_status(rpc_status.to_status(_not_found_status(request.id)))
        if request.id.startswith("slow"):
            time.sleep(1.0)
        if request.id == "whoami":
            auth = dict(context.invocation_metadata()).get("authorization", "")
            if auth != f"Bearer {TOKEN}":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad token")
            return conversation_pb2.Conversation(id=request.id, name=str(auth))
        return conversation_pb2.Conversation(id=request.id)

    def ListConversations(
        self, request: conversation_service_pb2.ListConversationsRequest, context: grpc.ServicerContext
    ) -> conversation_service_pb2.ListConversationsResponse:
        self.s.attempt(f"list:{request.page_token}", context)
        start = int(request.page_token or 0)
        end = start + request.page_size
        return conversation_service_pb2.ListConversationsResponse(
            result=[conversation_pb2.Conversation(id=i) for i in PAGE_ITEMS[start:end]],
            next_page_token=str(end) if end < len(PAGE_ITEMS) else "",
        )

    def UpdateConversation(
        self, request: conversation_service_pb2.UpdateConversationRequest, context: grpc.ServicerContext
    ) -> conversation_pb2.Conversation:
        self.s.attempt("update", context)
        # Echo the mask in `tags` so the test can see what was sent.
        return conversation_pb2.Conversation(
            id=request.conversation.id, name=request.conversation.name, tags=list(request.update_mask.paths)
        )

    def DeleteConversation(
        self, request: conversation_service_pb2.DeleteConversationRequest, context: grpc.ServicerContext
    ) -> conversation_pb2.Conversation:
        self.s.attempt("delete", context)
        return conversation_pb2.Conversation(id=request.id)

    def SendMessage(
        self, request: conversation_service_pb2.SendMessageRequest, context: grpc.ServicerContext
    ) -> message_pb2.Message:
        self.s.attempt("send", context, request.request_id)
        return message_pb2.Message(id=request.request_id, conversation_id=request.conversation_id, text=request.text)

    def AddParticipant(
        self, request: conversation_service_pb2.AddParticipantRequest, context: grpc.ServicerContext
    ) -> participant_pb2.Participant:
        self.s.attempt("add", context, request.request_id)
        return participant_pb2.Participant(id=request.request_id, conversation_id=request.conversation_id)


class Accounts(account_service_pb2_grpc.AccountServiceServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    def CreateAccount(
        self, request: account_service_pb2.CreateAccountRequest, context: grpc.ServicerContext
    ) -> account_pb2.Account:
        self.s.attempt("create", context, request.request_id)
        return account_pb2.Account(id=request.request_id, name=request.account.name)


class Ingest(ingest_service_pb2_grpc.IngestServiceServicer):
    def __init__(self, script: Script) -> None:
        self.s = script

    def IngestMessage(
        self, request: ingest_service_pb2.IngestMessageRequest, context: grpc.ServicerContext
    ) -> ingest_service_pb2.IngestMessageResponse:
        self.s.attempt("ingest", context, request.request_id)
        conversation = conversation_pb2.Conversation(peer=request.peer)
        conversation.self.CopyFrom(request.self)
        return ingest_service_pb2.IngestMessageResponse(
            message=message_pb2.Message(id=request.request_id, text=request.text), conversation=conversation
        )


@pytest.fixture(scope="module")
def script() -> Iterator[Script]:
    """A sync grpc server in its own threads, so a blocking client can call it from the test."""
    s = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    conversation_service_pb2_grpc.add_ConversationServiceServicer_to_server(Conversations(s), server)
    account_service_pb2_grpc.add_AccountServiceServicer_to_server(Accounts(s), server)
    ingest_service_pb2_grpc.add_IngestServiceServicer_to_server(Ingest(s), server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    s.target = f"127.0.0.1:{port}"
    yield s
    server.stop(grace=None)


Client: TypeAlias = ConvhubClient | AsyncConvhubClient


@pytest.fixture(params=["sync", "async"])
async def make_client(request: pytest.FixtureRequest, script: Script) -> AsyncIterator[Callable[..., Client]]:
    """Build clients of one flavour; the same test body runs against both."""
    script.reset()
    made: list[Client] = []

    def make(target: str | None = None, **kwargs: Any) -> Client:
        kwargs.setdefault("token", TOKEN)
        kwargs.setdefault("retry", FAST)
        kwargs.setdefault("timeout", 5.0)
        cls = ConvhubClient if request.param == "sync" else AsyncConvhubClient
        client = cls(target or script.target, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await close(client)


async def close(client: Client) -> None:
    if isinstance(client, AsyncConvhubClient):
        await client.close()
    else:
        client.close()


async def call(client: Client, name: str, *args: Any, **kwargs: Any) -> Any:
    """Call a client method by name, awaiting it when the client is async."""
    result = getattr(client, name)(*args, **kwargs)
    return await result if inspect.isawaitable(result) else result


async def collect(client: Client, name: str, *args: Any, **kwargs: Any) -> list[Any]:
    it = getattr(client, name)(*args, **kwargs)
    if hasattr(it, "__aiter__"):
        return [item async for item in it]
    return list(it)


def key() -> str:
    return uuid.uuid4().hex


# ---------------------------------------------------------------------------
# Part 1: behaviour against the scripted server
# ---------------------------------------------------------------------------


async def test_retries_unavailable_with_backoff_then_succeeds(
    make_client: Callable[..., Client], script: Script
) -> None:
    client = make_client(retry=RetryPolicy(initial_backoff=0.02, max_backoff=1.0, multiplier=2.0, jitter=0.0))
    id = key()
    script.fail[id] = 3
    started = time.monotonic()
    conversation = await call(client, "get_conversation", id)
    elapsed = time.monotonic() - started
    assert conversation.id == id
    assert script.calls[id] == 4
    assert elapsed >= 0.02 + 0.04 + 0.08  # three growing backoffs were slept


async def test_gives_up_after_max_attempts(make_client: Callable[..., Client], script: Script) -> None:
    client = make_client()
    id = key()
    script.fail[id] = 1000
    with pytest.raises(UnavailableError) as caught:
        await call(client, "get_conversation", id)
    assert script.calls[id] == FAST.max_attempts == 5
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE
    assert isinstance(caught.value.__cause__, grpc.RpcError)


async def test_retries_stop_at_the_overall_deadline(make_client: Callable[..., Client], script: Script) -> None:
    # 1000 attempts 0.05 s apart would take 50 s: the 1 s deadline must end them first.
    client = make_client(retry=RetryPolicy(max_attempts=1000, initial_backoff=0.05, max_backoff=0.05, jitter=0.0))
    id = key()
    script.fail[id] = 10_000
    started = time.monotonic()
    # The last attempt's own error, or the deadline itself when it ran out during that attempt (under load).
    with pytest.raises((UnavailableError, DeadlineExceededError)):
        await call(client, "get_conversation", id, timeout=1.0)
    assert time.monotonic() - started < 10  # generous on a loaded machine, and far below 50 s
    # Each retry waits its full 0.05 s backoff and none starts past the deadline: at most 1 + 1.0 / 0.05.
    assert 2 <= script.calls[id] <= 21


async def test_updates_and_deletes_are_not_retried(make_client: Callable[..., Client], script: Script) -> None:
    client = make_client()
    script.fail["update"] = script.fail["delete"] = 1
    with pytest.raises(UnavailableError):
        await call(client, "update_conversation", conversation_pb2.Conversation(id="x"), ["name"])
    with pytest.raises(UnavailableError):
        await call(client, "delete_conversation", "x")
    assert script.calls["update"] == script.calls["delete"] == 1


async def test_not_found_maps_rich_status(make_client: Callable[..., Client]) -> None:
    client = make_client()
    id = f"missing-{key()}"
    with pytest.raises(NotFoundError) as caught:
        await call(client, "get_conversation", id)
    err = caught.value
    assert isinstance(err, ConvhubError)
    assert err.code is grpc.StatusCode.NOT_FOUND
    assert err.message == f"conversation {id} not found"
    assert err.reason == "CONVERSATION_NOT_FOUND"
    assert err.domain == "convhub.v1"
    assert err.metadata == {"id": id}
    assert err.field_violations == [("id", "no such thing")]
    assert err.status is not None and err.status.code == code_pb2.NOT_FOUND
    assert "CONVERSATION_NOT_FOUND" in str(err)


async def test_deadline_exceeded(make_client: Callable[..., Client], script: Script) -> None:
    client = make_client(timeout=30.0)
    id = f"slow-{key()}"
    # The server answers after 1 s: under the 30 s default the call would succeed, so only
    # the per-call 0.2 s deadline can make it fail (no wall-clock bound needed to tell).
    with pytest.raises(DeadlineExceededError) as caught:
        await call(client, "get_conversation", id, timeout=0.2)
    assert caught.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert script.calls[id] == 1  # a deadline is an answer, not retried


async def test_client_default_deadline(make_client: Callable[..., Client]) -> None:
    client = make_client(timeout=0.2)
    with pytest.raises(DeadlineExceededError):
        await call(client, "get_conversation", f"slow-{key()}")


async def test_token_sent_as_bearer(make_client: Callable[..., Client]) -> None:
    conversation = await call(make_client(), "get_conversation", "whoami")
    assert conversation.name == f"Bearer {TOKEN}"
    with pytest.raises(UnauthenticatedError):
        await call(make_client(token=None), "get_conversation", "whoami")
    with pytest.raises(UnauthenticatedError):
        await call(make_client(token="wrong"), "get_conversation", "whoami")


async def test_iterator_walks_every_page_once(make_client: Callable[..., Client], script: Script) -> None:
    client = make_client()
    script.fail["list:3"] = 1  # the second page fails once; the walk retries it
    items = await collect(client, "iter_conversations", page_size=3)
    assert [c.id for c in items] == PAGE_ITEMS
    assert script.calls == Counter({"list:": 1, "list:3": 2, "list:6": 1})
    page = await call(client, "list_conversations", page_size=3, page_token="6")
    assert [c.id for c in page.result] == ["c6"] and page.next_page_token == ""


@pytest.mark.parametrize(
    ("method", "script_key", "args"),
    [
        ("send_message", "send", ("conv-1", "hello")),
        ("add_participant", "add", ("conv-1", participant_pb2.Participant(name="Ann"))),
        ("create_account", "create", (account_pb2.Account(name="sms"),)),
        ("ingest_message", "ingest", (common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550001111"),)),
    ],
)
async def test_creates_get_a_request_id_kept_across_retries(
    make_client: Callable[..., Client], script: Script, method: str, script_key: str, args: tuple[Any, ...]
) -> None:
    client = make_client()
    script.fail[script_key] = 2
    result = await call(client, method, *args)
    seen = script.request_ids[script_key]
    assert len(seen) == 3 and len(set(seen)) == 1  # retried, always with the same key
    uuid.UUID(seen[0])  # an auto-generated UUID
    assert (result.message.id if method == "ingest_message" else result.id) == seen[0]

    script.reset()
    await call(client, method, *args, request_id="mine")
    assert script.request_ids[script_key] == ["mine"]


async def test_ingest_maps_self_address(make_client: Callable[..., Client]) -> None:
    ours = common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550009999")
    theirs = common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550001111")
    response = await call(make_client(), "ingest_message", theirs, self_address=ours, text="hi")
    assert response.conversation.self == ours
    assert response.conversation.peer == theirs
    assert response.message.text == "hi"


async def test_update_sends_mask(make_client: Callable[..., Client]) -> None:
    conversation = conversation_pb2.Conversation(id="c1", name="New name")
    updated = await call(make_client(), "update_conversation", conversation, update_mask=["name"])
    assert updated.name == "New name" and list(updated.tags) == ["name"]


async def test_health(make_client: Callable[..., Client]) -> None:
    response = await call(make_client(), "health")
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_unreachable_server_is_unavailable(make_client: Callable[..., Client]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(f"127.0.0.1:{port}", timeout=2.0)
    with pytest.raises(UnavailableError):
        await call(client, "get_conversation", "x")


async def test_context_managers(script: Script) -> None:
    with ConvhubClient(script.target, token=TOKEN) as client:
        assert client.get_conversation("whoami").name == f"Bearer {TOKEN}"
    async with AsyncConvhubClient(script.target, token=TOKEN) as aclient:
        assert (await aclient.get_conversation("whoami")).name == f"Bearer {TOKEN}"


def test_backoff_schedule() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert [policy.backoff(n) for n in range(1, 7)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 2.0])
    jittery = RetryPolicy(jitter=0.2)
    for n in range(1, 7):
        for _ in range(50):
            assert 0.8 * policy.backoff(n) <= jittery.backoff(n) <= policy.backoff(n)


def test_retry_decisions() -> None:
    policy = RetryPolicy(jitter=0.0)
    unavailable, none = grpc.StatusCode.UNAVAILABLE, Deadline.after(None)
    assert policy.delay_before_retry(1, unavailable, idempotent=True, deadline=none) == pytest.approx(0.1)
    assert policy.delay_before_retry(4, unavailable, idempotent=True, deadline=none) == pytest.approx(0.8)
    assert policy.delay_before_retry(5, unavailable, idempotent=True, deadline=none) is None  # attempts used up
    assert policy.delay_before_retry(1, unavailable, idempotent=False, deadline=none) is None
    assert policy.delay_before_retry(1, grpc.StatusCode.INTERNAL, idempotent=True, deadline=none) is None
    assert policy.delay_before_retry(1, unavailable, idempotent=True, deadline=Deadline.after(0.05)) is None
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# ---------------------------------------------------------------------------
# Part 2: end to end against the real convhub server (fixtures in conftest.py)
# ---------------------------------------------------------------------------

OURS = common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550100000")


def _peer(n: int) -> common_pb2.Address:
    return common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=f"+1555020{n:04d}")


@pytest.fixture(params=["sync", "async"])
async def hub_client(request: pytest.FixtureRequest, hub: Any, tenant: Any) -> AsyncIterator[Client]:
    """A client of each flavour for a fresh tenant on the real server."""
    cls = ConvhubClient if request.param == "sync" else AsyncConvhubClient
    client = cls(hub.grpc_target, token=tenant.token, timeout=10.0, retry=FAST)
    yield client
    await close(client)


async def ingest(client: Client, n: int, text: str = "hello") -> ingest_service_pb2.IngestMessageResponse:
    response: ingest_service_pb2.IngestMessageResponse = await call(
        client,
        "ingest_message",
        _peer(n),
        self_address=OURS,
        channel=common_pb2.CONVERSATION_TYPE_MESSAGE,
        text=text,
    )
    return response


async def test_e2e_ingest_then_read_back(hub_client: Client) -> None:
    first = await ingest(hub_client, 1, "hello")
    assert first.conversation_created and not first.duplicate
    conversation_id = first.conversation.id
    second = await ingest(hub_client, 1, "again")
    assert second.conversation.id == conversation_id and not second.conversation_created

    got = await call(hub_client, "get_conversation", conversation_id)
    assert got.id == conversation_id and got.peer.target == _peer(1).target
    assert [c.id for c in await collect(hub_client, "iter_conversations")] == [conversation_id]
    messages = await collect(hub_client, "iter_messages", conversation_id, page_size=1)
    assert [m.text for m in messages] == ["hello", "again"]
    message = await call(hub_client, "get_message", conversation_id, messages[0].id)
    assert message.id == first.message.id


async def test_e2e_iterator_walks_pages(hub_client: Client) -> None:
    opened = {(await ingest(hub_client, n)).conversation.id for n in range(5)}
    walked = [c.id for c in await collect(hub_client, "iter_conversations", page_size=2)]
    assert sorted(walked) == sorted(opened) and len(walked) == 5
    page = await call(hub_client, "list_conversations", page_size=2)
    assert len(page.result) == 2 and page.next_page_token


async def test_e2e_update_with_mask(hub_client: Client) -> None:
    conversation = (await ingest(hub_client, 7)).conversation
    change = conversation_pb2.Conversation(id=conversation.id, name="Renamed", detail="not in the mask")
    updated = await call(hub_client, "update_conversation", change, update_mask=["name"])
    assert updated.name == "Renamed"
    assert updated.detail == conversation.detail  # outside the mask: untouched
    assert (await call(hub_client, "get_conversation", conversation.id)).name == "Renamed"


async def test_e2e_errors_map_to_exceptions(hub_client: Client, hub: Any) -> None:
    with pytest.raises(NotFoundError) as caught:
        await call(hub_client, "get_conversation", str(uuid.uuid4()))
    assert caught.value.reason == "CONVERSATION_NOT_FOUND"

    with pytest.raises(ConvhubError) as bad:
        await call(hub_client, "list_conversations", page_size=-1)
    assert bad.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert [field for field, _ in bad.value.field_violations] == ["page_size"]

    with ConvhubClient(hub.grpc_target, token="not-a-token") as stranger, pytest.raises(UnauthenticatedError):
        stranger.list_conversations()


async def test_e2e_health(hub_client: Client) -> None:
    assert (await call(hub_client, "health")).status == health_pb2.HealthCheckResponse.SERVING
