"""Bad input over gRPC, on SQLite and PostgreSQL: INVALID_ARGUMENT naming the field, nothing written (issue 10).

Each case is a request a real client can send. The rules behind them live in
`server/api/request_rules.py` (text, Struct values, the contract's declared
limits), `grpc_transport.decode_request` (bytes that are no message) and
`api/credentials.py` (one token per call).
"""

from __future__ import annotations

import signal
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from convhub.server.store.db import create_db_engine
from convhub.v1 import account_pb2, common_pb2, participant_pb2
from convhub.v1 import account_service_pb2 as acs
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import ingest_service_pb2 as ip
from tests.conftest import Hub, Tenant, create_database, new_tenant, start_server
from tests.support import SMS, TEL, Api, expect_error, rich_error, tenant_snapshot, varint

INVALID = grpc.StatusCode.INVALID_ARGUMENT
MAX_DEPTH = 24  # README "Limits"; server/api/request_rules.py


@dataclass
class World:
    """A tenant with one conversation, and a stub per service bound to its token."""

    hub: Hub
    tenant: Tenant
    api: Api
    conversation_id: str


@pytest.fixture
def world(hub: Hub, channel: grpc.Channel, tenant: Tenant) -> World:
    api = Api.for_tenant(channel, tenant.metadata)
    return World(hub, tenant, api, api.sms(peer="+15550002222").conversation.id)


def ingest(**fields: Any) -> ip.IngestMessageRequest:
    base: dict[str, Any] = {
        "channel": SMS,
        "self": common_pb2.Address(type=TEL, target="+15559990000"),
        "peer": common_pb2.Address(type=TEL, target="+15550001111"),
        "text": "hello",
    }
    return ip.IngestMessageRequest(**{**base, **fields})


def update_conversation(w: World, path: str, **fields: Any) -> cs.UpdateConversationRequest:
    request = cs.UpdateConversationRequest(update_mask={"paths": [path]})
    request.conversation.id = w.conversation_id
    for name, value in fields.items():
        if name == "metadata":
            request.conversation.metadata.update(value)
        elif name == "tags":
            request.conversation.tags.extend(value)
        else:
            setattr(request.conversation, name, value)
    return request


def with_metadata_value(w: World, key: str, value: struct_pb2.Value) -> cs.UpdateConversationRequest:
    request = update_conversation(w, "metadata")
    request.conversation.metadata.fields[key].CopyFrom(value)
    return request


def nested_value(depth: int) -> struct_pb2.Value:
    """A Value holding `depth` levels of objects: {"a": {"a": ... 1}}."""
    value = struct_pb2.Value(number_value=1)
    for _ in range(depth):
        outer = struct_pb2.Value()
        outer.struct_value.fields["a"].CopyFrom(value)
        value = outer
    return value


def expect_refused(w: World, call: Callable[[Any], Any], request: Any, field: str) -> None:
    """The call fails INVALID_ARGUMENT naming `field`, and the tenant's rows are exactly as before."""
    before = tenant_snapshot(w.hub.engine, w.tenant.customer_id)
    expect_error(call, request, INVALID, field)
    assert tenant_snapshot(w.hub.engine, w.tenant.customer_id) == before


Case = tuple[str, Callable[[World], tuple[Callable[[Any], Any], Any]], str]

# Item 1: NUL in any text field, whichever method carries it.
NUL_CASES: list[Case] = [
    ("ingest text", lambda w: (w.api.ingest.IngestMessage, ingest(text="a\x00b")), "text"),
    ("ingest subject", lambda w: (w.api.ingest.IngestMessage, ingest(subject="\x00")), "subject"),
    ("transaction_id", lambda w: (w.api.ingest.IngestMessage, ingest(transaction_id="SM\x001")), "transaction_id"),
    ("request_id", lambda w: (w.api.ingest.IngestMessage, ingest(request_id="r\x00")), "request_id"),
    (
        "peer target_name",
        lambda w: (
            w.api.ingest.IngestMessage,
            ingest(peer=common_pb2.Address(type=TEL, target="+15550001111", target_name="Al\x00ice")),
        ),
        "peer.target_name",
    ),
    (
        "email peer",
        lambda w: (
            w.api.ingest.IngestMessage,
            ingest(
                channel=common_pb2.CONVERSATION_TYPE_EMAIL,
                self=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_EMAIL, target="us@example.com"),
                peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_EMAIL, target="a\x00@example.com"),
            ),
        ),
        "peer.target",
    ),
    (
        "media url",
        lambda w: (w.api.ingest.IngestMessage, ingest(medias=[common_pb2.Media(url="https://x/\x00")])),
        "medias[0].url",
    ),
    (
        "conversation name",
        lambda w: (w.api.conversations.UpdateConversation, update_conversation(w, "name", name="n\x00")),
        "conversation.name",
    ),
    (
        "conversation tag",
        lambda w: (w.api.conversations.UpdateConversation, update_conversation(w, "tags", tags=["ok", "b\x00d"])),
        "conversation.tags[1]",
    ),
    (
        "metadata string",
        lambda w: (w.api.conversations.UpdateConversation, update_conversation(w, "metadata", metadata={"k": "\x00"})),
        "conversation.metadata.k",
    ),
    (
        "metadata key",
        lambda w: (w.api.conversations.UpdateConversation, update_conversation(w, "metadata", metadata={"k\x00": 1})),
        "conversation.metadata[k\\u0000]",
    ),
    (
        "update_mask path",
        lambda w: (w.api.conversations.UpdateConversation, update_conversation(w, "name\x00", name="x")),
        "update_mask.paths[0]",
    ),
    (
        "account name",
        lambda w: (
            w.api.accounts.CreateAccount,
            acs.CreateAccountRequest(account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name="a\x00")),
        ),
        "account.name",
    ),
    (
        "credential value",
        lambda w: (
            w.api.accounts.CreateAccount,
            acs.CreateAccountRequest(
                account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, credentials={"api_key": "s\x00"})
            ),
        ),
        "account.credentials[api_key]",
    ),
    (
        "participant name",
        lambda w: (
            w.api.conversations.AddParticipant,
            cs.AddParticipantRequest(
                conversation_id=w.conversation_id,
                participant=participant_pb2.Participant(
                    name="P\x00", addresses=[common_pb2.Address(type=TEL, target="+15550003333")]
                ),
            ),
        ),
        "participant.name",
    ),
    (
        "page_token",
        lambda w: (w.api.conversations.ListConversations, cs.ListConversationsRequest(page_token="\x00")),
        "page_token",
    ),
    ("get id", lambda w: (w.api.conversations.GetConversation, cs.GetConversationRequest(id="\x00")), "id"),
]


@pytest.mark.parametrize(("name", "make", "field"), NUL_CASES, ids=[c[0] for c in NUL_CASES])
def test_nul_in_any_text_field_is_invalid_and_writes_nothing(
    world: World, name: str, make: Callable[[World], tuple[Callable[[Any], Any], Any]], field: str
) -> None:
    call, request = make(world)
    expect_refused(world, call, request, field)


# Item 6: numbers JSON cannot hold.
@pytest.mark.parametrize("number", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_struct_numbers_are_invalid(world: World, number: float) -> None:
    request = with_metadata_value(world, "a", struct_pb2.Value(number_value=number))
    expect_refused(world, world.api.conversations.UpdateConversation, request, "conversation.metadata.a")
    inside_list = struct_pb2.Value()
    inside_list.list_value.values.add(number_value=1)
    inside_list.list_value.values.add(number_value=number)
    request = with_metadata_value(world, "l", inside_list)
    expect_refused(world, world.api.conversations.UpdateConversation, request, "conversation.metadata.l[1]")


# Item 7: one nesting limit for Struct values, below the decoder's.
def test_struct_nesting_up_to_the_limit_is_stored(world: World) -> None:
    request = with_metadata_value(world, "a", nested_value(MAX_DEPTH - 1))  # the Struct itself is level 1
    assert world.api.conversations.UpdateConversation(request).metadata == request.conversation.metadata


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 30, 33])  # 33: the deepest upb decodes here
def test_struct_nested_past_the_limit_is_invalid(world: World, depth: int) -> None:
    request = with_metadata_value(world, "a", nested_value(depth - 1))
    rich = expect_error(world.api.conversations.UpdateConversation, request, INVALID)
    assert rich.fields[0].startswith("conversation.metadata.a"), rich.fields
    assert "nested deeper than" in rich.message


# Item 8 on gRPC: the limits the contract declares are enforced on every transport.
def test_declared_limits_are_enforced(world: World) -> None:
    conversations = world.api.conversations
    expect_refused(
        world, conversations.ListConversations, cs.ListConversationsRequest(page_token="x" * 513), "page_token"
    )
    expect_refused(world, conversations.ListConversations, cs.ListConversationsRequest(page_size=-1), "page_size")
    too_many_tags = update_conversation(world, "tags", tags=[f"t{i}" for i in range(51)])
    expect_refused(world, conversations.UpdateConversation, too_many_tags, "conversation.tags")
    long_key = acs.CreateAccountRequest(
        account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, credentials={"k" * 65: "v"})
    )
    rich = expect_error(world.api.accounts.CreateAccount, long_key, INVALID)
    assert rich.fields[0].startswith("account.credentials[kkk"), rich.fields
    expect_refused(
        world, world.api.ingest.IngestMessage, ingest(medias=[common_pb2.Media(url="u", size=-1)]), "medias[0].size"
    )


# Item 10 on gRPC: one token per call.
def test_two_different_authorization_values_are_refused(world: World, other_tenant: Tenant) -> None:
    stub = world.api.conversations._stub
    request = cs.ListConversationsRequest()
    for metadata in (
        (("authorization", f"Bearer {world.tenant.token}"), ("authorization", f"Bearer {other_tenant.token}")),
        (("authorization", f"Bearer {world.tenant.token}"), ("authorization", "Basic dXNlcjpwdw==")),
    ):
        with pytest.raises(grpc.RpcError) as err:
            stub.ListConversations(request, metadata=metadata, timeout=10)
        rich = rich_error(err.value)
        assert (rich.code, rich.fields, rich.reason) == (INVALID, ["authorization"], "AMBIGUOUS_CREDENTIALS")
    same_twice = (("authorization", f"Bearer {world.tenant.token}"),) * 2
    assert [c.id for c in stub.ListConversations(request, metadata=same_twice, timeout=10).result] == [
        world.conversation_id
    ]


# Item 2 on gRPC: bytes that are no message.
UNDECODABLE = {
    "invalid utf-8": b"\xff\xfe\xfd\xfc",  # in a string field: not UTF-8
    "encoded surrogate": b"\xed\xa0\x80",  # U+D800 as CESU-8: not UTF-8 either
    "truncated": None,  # a length of 16 with two bytes following
    "bad wire type": None,  # wire type 7 does not exist
}
METHODS = {
    "/convhub.v1.ConversationService/GetConversation": cs.GetConversationRequest,
    "/convhub.v1.ConversationService/ListConversations": cs.ListConversationsRequest,
    "/convhub.v1.IngestService/IngestMessage": ip.IngestMessageRequest,
    "/convhub.v1.AccountService/CreateAccount": acs.CreateAccountRequest,
}


def undecodable(request_cls: Any, defect: str) -> bytes:
    if defect == "truncated":
        return b"\x0a\x10ab"
    if defect == "bad wire type":
        return b"\x0f\x01"
    number = next(f.number for f in request_cls.DESCRIPTOR.fields if f.type == f.TYPE_STRING)
    text = UNDECODABLE[defect]
    assert text is not None
    return varint(number << 3 | 2) + varint(len(text)) + text


@pytest.mark.parametrize("defect", list(UNDECODABLE))
@pytest.mark.parametrize("method", list(METHODS))
def test_undecodable_requests_are_invalid(world: World, channel: grpc.Channel, method: str, defect: str) -> None:
    call = channel.unary_unary(method)
    before = tenant_snapshot(world.hub.engine, world.tenant.customer_id)
    with pytest.raises(grpc.RpcError) as err:
        call(undecodable(METHODS[method], defect), metadata=world.tenant.metadata, timeout=10)
    rich = rich_error(err.value)
    assert (rich.code, rich.fields, rich.reason) == (INVALID, ["request"], "UNDECODABLE_REQUEST"), rich.message
    assert tenant_snapshot(world.hub.engine, world.tenant.customer_id) == before


def _deep_struct_request(depth: int) -> bytes:
    """UpdateConversationRequest bytes whose metadata nests `depth` levels: encoded by hand, past what upb decodes."""
    value = b"\x11" + struct.pack("<d", 1.0)  # Value.number_value (field 2, fixed64)
    metadata = b""
    for _ in range(depth):
        entry = b"\x0a\x01a" + b"\x12" + varint(len(value)) + value  # map entry {key: "a", value: ...}
        metadata = b"\x0a" + varint(len(entry)) + entry  # Struct.fields (field 1)
        value = b"\x2a" + varint(len(metadata)) + metadata  # Value.struct_value (field 5)
    conversation = b"\x5a" + varint(len(metadata)) + metadata  # Conversation.metadata (field 11)
    return b"\x0a" + varint(len(conversation)) + conversation  # UpdateConversationRequest.conversation (field 1)


def test_struct_nested_past_the_decoders_limit_is_invalid(world: World, channel: grpc.Channel) -> None:
    call = channel.unary_unary("/convhub.v1.ConversationService/UpdateConversation")
    with pytest.raises(grpc.RpcError) as err:
        call(_deep_struct_request(60), metadata=world.tenant.metadata, timeout=10)
    assert rich_error(err.value).code == INVALID


def test_undecodable_requests_are_not_logged_as_errors(tmp_path: Path) -> None:
    """A server of its own, whose log is read after it stops (the session servers' logs are not kept)."""
    for url in create_database("sqlite", tmp_path):
        proc, grpc_target, _, lines = start_server(url, data_dir=tmp_path, http=False)
        engine = create_db_engine(url, pool_size=1)
        try:
            tenant = new_tenant(Hub("sqlite", url, grpc_target, None, proc, lines, engine))
            with grpc.insecure_channel(grpc_target) as ch:
                calls = [(m, undecodable(cls, defect)) for m, cls in METHODS.items() for defect in UNDECODABLE]
                calls.append(("/convhub.v1.ConversationService/UpdateConversation", _deep_struct_request(60)))
                for method, payload in calls * 3:
                    with pytest.raises(grpc.RpcError) as err:
                        ch.unary_unary(method)(payload, metadata=tenant.metadata, timeout=10)
                    assert err.value.code() == INVALID  # type: ignore[attr-defined]
        finally:
            engine.dispose()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
        lines.extend(out.splitlines())
        log = "\n".join(lines)
        assert "Traceback" not in log and "DecodeError" not in log and " ERROR " not in log, log[-3000:]
        assert len(lines) < 10, log  # the start and stop lines only: no line per bad call


def test_a_fresh_id_is_still_not_found(world: World) -> None:
    """Control for the cases above: a well-formed request for nothing is NOT_FOUND, not INVALID_ARGUMENT."""
    expect_error(
        world.api.conversations.GetConversation,
        cs.GetConversationRequest(id=str(uuid.uuid4())),
        grpc.StatusCode.NOT_FOUND,
    )
