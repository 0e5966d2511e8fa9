"""Messages and participants of a conversation."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from convhub.v1 import common_pb2, participant_pb2
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import Tenant
from tests.support import TEL, Api, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


def test_messages_page_in_order_and_can_be_fetched_and_deleted(api: Api) -> None:
    ids = [api.sms(text=f"m{i}").message.id for i in range(5)]
    room = api.sms(text="last").conversation.id
    ids.append(api.conversations.ListMessages(cs.ListMessagesRequest(conversation_id=room)).result[-1].id)
    seen: list[str] = []
    token = ""
    while True:
        page = api.conversations.ListMessages(
            cs.ListMessagesRequest(conversation_id=room, page_size=4, page_token=token)
        )
        seen += [m.id for m in page.result]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    message = api.conversations.GetMessage(cs.GetMessageRequest(conversation_id=room, id=ids[0]))
    assert message.text == "m0" and message.source.target == "+15550001111"
    deleted = api.conversations.DeleteMessage(cs.DeleteMessageRequest(conversation_id=room, id=ids[0]))
    assert deleted.HasField("tm_delete")
    expect_error(api.conversations.GetMessage, cs.GetMessageRequest(conversation_id=room, id=ids[0]), NOT_FOUND)
    left = api.conversations.ListMessages(cs.ListMessagesRequest(conversation_id=room)).result
    assert [m.id for m in left] == ids[1:]


def test_a_message_is_only_found_under_its_own_conversation(api: Api) -> None:
    a = api.sms(peer="+15550001111")
    b = api.sms(peer="+15550002222")
    expect_error(
        api.conversations.GetMessage,
        cs.GetMessageRequest(conversation_id=b.conversation.id, id=a.message.id),
        NOT_FOUND,
    )


def test_send_message_without_a_usable_account_is_failed_precondition_and_stores_nothing(api: Api) -> None:
    room = api.sms().conversation.id
    expect_error(
        api.conversations.SendMessage, cs.SendMessageRequest(conversation_id="x", text="hi"), INVALID, "conversation_id"
    )
    missing = "00000000-0000-4000-8000-000000000000"
    expect_error(api.conversations.SendMessage, cs.SendMessageRequest(conversation_id=missing, text="hi"), NOT_FOUND)
    expect_error(api.conversations.SendMessage, cs.SendMessageRequest(conversation_id=room), INVALID, "text")
    err = expect_error(
        api.conversations.SendMessage,
        cs.SendMessageRequest(conversation_id=room, text="hi"),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert err.reason == "NO_USABLE_CHANNEL"
    assert "no enabled account with address +15559990000" in err.message
    assert len(api.conversations.ListMessages(cs.ListMessagesRequest(conversation_id=room)).result) == 1


def test_the_first_message_adds_the_peer_as_participant_and_later_ones_mark_it_active(api: Api) -> None:
    first = api.sms(peer="+15550001111")
    room = first.conversation.id
    [peer] = api.conversations.ListParticipants(cs.ListParticipantsRequest(conversation_id=room)).result
    assert [a.target for a in peer.addresses] == ["+15550001111"]
    assert peer.last_active_channel == common_pb2.CONVERSATION_TYPE_MESSAGE
    before = peer.tm_last_active.ToMicroseconds()
    api.sms(peer="+15550001111")
    [peer] = api.conversations.ListParticipants(cs.ListParticipantsRequest(conversation_id=room)).result
    assert peer.tm_last_active.ToMicroseconds() > before


def test_participants_hold_several_addresses_and_can_be_updated_and_removed(api: Api) -> None:
    room = api.sms().conversation.id
    person = participant_pb2.Participant(
        name="Alice",
        addresses=[
            common_pb2.Address(type=TEL, target="+1 555 000 3333"),
            common_pb2.Address(type=common_pb2.ADDRESS_TYPE_EMAIL, target="Alice@Example.com"),
        ],
        preferred_channel=common_pb2.CONVERSATION_TYPE_EMAIL,
    )
    added = api.conversations.AddParticipant(
        cs.AddParticipantRequest(conversation_id=room, participant=person, request_id="p1")
    )
    assert [a.target for a in added.addresses] == ["+15550003333", "alice@example.com"]
    again = api.conversations.AddParticipant(
        cs.AddParticipantRequest(conversation_id=room, participant=person, request_id="p1")
    )
    assert again.id == added.id
    patch = participant_pb2.Participant(
        id=added.id,
        conversation_id=room,
        name="Alice B",
        addresses=[common_pb2.Address(type=TEL, target="+15550004444")],
    )
    updated = api.conversations.UpdateParticipant(
        cs.UpdateParticipantRequest(
            participant=patch, update_mask=field_mask_pb2.FieldMask(paths=["name", "addresses"])
        )
    )
    assert updated.name == "Alice B" and [a.target for a in updated.addresses] == ["+15550004444"]
    assert updated.preferred_channel == common_pb2.CONVERSATION_TYPE_EMAIL
    listed = api.conversations.ListParticipants(cs.ListParticipantsRequest(conversation_id=room)).result
    assert len(listed) == 2 and listed[1] == updated
    api.conversations.RemoveParticipant(cs.RemoveParticipantRequest(conversation_id=room, id=added.id))
    assert len(api.conversations.ListParticipants(cs.ListParticipantsRequest(conversation_id=room)).result) == 1


@pytest.mark.parametrize(
    ("participant", "field"),
    [
        (participant_pb2.Participant(name="nobody"), "participant.addresses"),
        (
            participant_pb2.Participant(addresses=[common_pb2.Address(target="+15550001111")]),
            "participant.addresses[0].type",
        ),
        (
            participant_pb2.Participant(
                addresses=[common_pb2.Address(type=common_pb2.ADDRESS_TYPE_EMAIL, target="nope")]
            ),
            "participant.addresses[0].target",
        ),
    ],
)
def test_bad_participants_name_the_field_and_are_not_added(
    api: Api, participant: participant_pb2.Participant, field: str
) -> None:
    room = api.sms().conversation.id
    expect_error(
        api.conversations.AddParticipant,
        cs.AddParticipantRequest(conversation_id=room, participant=participant),
        INVALID,
        field,
    )
    assert len(api.conversations.ListParticipants(cs.ListParticipantsRequest(conversation_id=room)).result) == 1
