"""Conversations: list/get/update/delete, pagination, masks, tenancy (DESIGN.md invariants 1, 6)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2, struct_pb2

from convhub.v1 import common_pb2, conversation_pb2
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import Tenant
from tests.support import Api, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


def open_rooms(api: Api, n: int) -> list[str]:
    return [api.sms(peer=f"+1555000{i:04d}").conversation.id for i in range(n)]


def list_all(api: Api, page_size: int) -> list[str]:
    ids: list[str] = []
    token = ""
    while True:
        page = api.conversations.ListConversations(cs.ListConversationsRequest(page_size=page_size, page_token=token))
        assert len(page.result) <= page_size
        ids += [c.id for c in page.result]
        token = page.next_page_token
        if not token:
            return ids


def test_pages_walk_every_conversation_once_in_creation_order(api: Api) -> None:
    created = open_rooms(api, 7)
    assert list_all(api, 3) == created
    assert list_all(api, 100) == created


def test_rooms_added_while_paging_are_neither_skipped_nor_repeated(api: Api) -> None:
    created = open_rooms(api, 4)
    page = api.conversations.ListConversations(cs.ListConversationsRequest(page_size=2))
    created += open_rooms_from(api, 100, 2)
    rest = api.conversations.ListConversations(
        cs.ListConversationsRequest(page_size=10, page_token=page.next_page_token)
    )
    assert [c.id for c in page.result] + [c.id for c in rest.result] == created


def open_rooms_from(api: Api, start: int, n: int) -> list[str]:
    return [api.sms(peer=f"+1555000{i:04d}").conversation.id for i in range(start, start + n)]


def test_default_page_size_is_100_and_larger_sizes_are_capped(api: Api) -> None:
    page = api.conversations.ListConversations(cs.ListConversationsRequest(page_size=1000))
    assert page.next_page_token == ""


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [({"page_size": -1}, "page_size"), ({"page_token": "garbage!"}, "page_token")],
)
def test_bad_paging_arguments_are_invalid(api: Api, request_fields: dict, field: str) -> None:
    expect_error(api.conversations.ListConversations, cs.ListConversationsRequest(**request_fields), INVALID, field)


def test_a_page_token_from_another_list_is_refused(api: Api) -> None:
    room = api.sms().conversation.id
    for i in range(3):
        api.sms(text=f"m{i}")
    token = api.conversations.ListMessages(cs.ListMessagesRequest(conversation_id=room, page_size=1)).next_page_token
    assert token
    expect_error(
        api.conversations.ListConversations, cs.ListConversationsRequest(page_token=token), INVALID, "page_token"
    )


def test_get_returns_the_conversation_and_bad_ids_are_invalid(api: Api) -> None:
    room = api.sms().conversation
    assert api.conversations.GetConversation(cs.GetConversationRequest(id=room.id)) == room
    expect_error(api.conversations.GetConversation, cs.GetConversationRequest(id="x"), INVALID, "id")
    expect_error(api.conversations.GetConversation, cs.GetConversationRequest(), INVALID, "id")
    expect_error(
        api.conversations.GetConversation,
        cs.GetConversationRequest(id="00000000-0000-4000-8000-000000000000"),
        NOT_FOUND,
    )


def test_another_customers_conversation_is_not_found(channel: grpc.Channel, api: Api, other_tenant: Tenant) -> None:
    mine = api.sms().conversation
    theirs = Api.for_tenant(channel, other_tenant.metadata)
    expect_error(theirs.conversations.GetConversation, cs.GetConversationRequest(id=mine.id), NOT_FOUND)
    expect_error(theirs.conversations.DeleteConversation, cs.DeleteConversationRequest(id=mine.id), NOT_FOUND)
    patch = conversation_pb2.Conversation(id=mine.id, name="hijack")
    expect_error(theirs.conversations.UpdateConversation, cs.UpdateConversationRequest(conversation=patch), NOT_FOUND)
    expect_error(theirs.conversations.ListMessages, cs.ListMessagesRequest(conversation_id=mine.id), NOT_FOUND)
    assert list_all(theirs, 100) == []
    assert api.conversations.GetConversation(cs.GetConversationRequest(id=mine.id)).name == ""


def test_update_with_mask_changes_only_the_masked_fields(api: Api) -> None:
    room = api.sms().conversation
    metadata = struct_pb2.Struct()
    metadata.update({"crm": {"id": 42}})
    patch = conversation_pb2.Conversation(
        id=room.id, name="Alice", detail="ignored", owner_type="agent", owner_id="a-1", metadata=metadata, tags=["vip"]
    )
    mask = field_mask_pb2.FieldMask(paths=["name", "owner_type", "owner_id", "metadata", "tags"])
    updated = api.conversations.UpdateConversation(cs.UpdateConversationRequest(conversation=patch, update_mask=mask))
    assert (updated.name, updated.detail, updated.owner_type, updated.owner_id) == ("Alice", "", "agent", "a-1")
    assert list(updated.tags) == ["vip"] and updated.metadata["crm"]["id"] == 42
    assert updated.tm_update.ToMicroseconds() > room.tm_update.ToMicroseconds()
    assert api.conversations.GetConversation(cs.GetConversationRequest(id=room.id)) == updated


def test_update_without_mask_writes_the_fields_that_are_set(api: Api) -> None:
    room = api.sms().conversation
    api.conversations.UpdateConversation(
        cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=room.id, name="n", detail="d"))
    )
    second = api.conversations.UpdateConversation(
        cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=room.id, detail="d2"))
    )
    assert (second.name, second.detail) == ("n", "d2")


@pytest.mark.parametrize("path", ["nope", "self", "id", "tm_create", "peer.target"])
def test_unknown_or_output_only_mask_paths_are_invalid(api: Api, path: str) -> None:
    room = api.sms().conversation
    request = cs.UpdateConversationRequest(
        conversation=conversation_pb2.Conversation(id=room.id, name="x"),
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )
    expect_error(api.conversations.UpdateConversation, request, INVALID, "update_mask")
    assert api.conversations.GetConversation(cs.GetConversationRequest(id=room.id)).name == ""


def test_oversize_name_is_invalid_and_nothing_changes(api: Api) -> None:
    room = api.sms().conversation
    request = cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=room.id, name="n" * 300))
    expect_error(api.conversations.UpdateConversation, request, INVALID, "conversation.name")
    assert api.conversations.GetConversation(cs.GetConversationRequest(id=room.id)) == room


def test_reopening_a_room_when_another_is_open_for_the_same_peer_conflicts(api: Api) -> None:
    old = api.sms(peer="+15550005555").conversation
    closed = conversation_pb2.Conversation(id=old.id, state=conversation_pb2.CONVERSATION_STATE_CLOSED)
    api.conversations.UpdateConversation(cs.UpdateConversationRequest(conversation=closed))
    api.sms(peer="+15550005555")  # opens a new room
    reopen = conversation_pb2.Conversation(id=old.id, state=conversation_pb2.CONVERSATION_STATE_OPEN)
    err = expect_error(
        api.conversations.UpdateConversation,
        cs.UpdateConversationRequest(conversation=reopen),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert err.reason == "OPEN_CONVERSATION_EXISTS"


def test_deleted_conversations_leave_lists_and_gets(api: Api) -> None:
    keep, gone = open_rooms(api, 2)
    deleted = api.conversations.DeleteConversation(cs.DeleteConversationRequest(id=gone))
    assert deleted.HasField("tm_delete")
    assert list_all(api, 100) == [keep]
    expect_error(api.conversations.GetConversation, cs.GetConversationRequest(id=gone), NOT_FOUND)
    expect_error(api.conversations.DeleteConversation, cs.DeleteConversationRequest(id=gone), NOT_FOUND)


def test_list_filters_over_grpc_and_unassign(api: Api) -> None:
    """The same filters as REST (tests/gateway/test_voipbin_parity.py), through the typed request fields."""
    a, b = open_rooms(api, 2)
    owner = conversation_pb2.Conversation(id=a, owner_type="agent", owner_id="agent-7", tags=["vip"])
    api.conversations.UpdateConversation(cs.UpdateConversationRequest(conversation=owner))

    def ids(**fields: object) -> list[str]:
        return [c.id for c in api.conversations.ListConversations(cs.ListConversationsRequest(**fields)).result]

    assert ids(owner_id="agent-7") == [a]
    assert ids(tag="vip") == [a]
    assert ids(peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+1 555 000 0001")) == [b]
    assert ids(state=conversation_pb2.CONVERSATION_STATE_CLOSED) == []
    expect_error(api.conversations.ListConversations, cs.ListConversationsRequest(state=9), INVALID)
    unassigned = api.conversations.UnassignConversation(cs.UnassignConversationRequest(id=a))
    assert (unassigned.owner_type, unassigned.owner_id, list(unassigned.tags)) == ("", "", ["vip"])
    assert ids(owner_id="agent-7") == []
