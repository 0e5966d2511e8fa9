"""People, not just addresses (issue 9): one person per address, a conversation that follows them, opt-outs.

Over real gRPC (and the REST shim for the 409) on SQLite and PostgreSQL.
"""

from __future__ import annotations

import grpc
import httpx
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import select

from convhub.server.app import email_opt_out
from convhub.server.domain.addresses import Address, AddressError, normalize_target
from convhub.server.errors import InvalidArgument
from convhub.server.events.outbox import EVENT_TYPE_NAMES
from convhub.server.services.opt_outs import set_opt_out
from convhub.server.store import contacts
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database
from convhub.server.store.models import ContactAddress, Event
from convhub.v1 import common_pb2, event_pb2, participant_pb2
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import ingest_service_pb2 as ip
from tests.conftest import Hub, Tenant
from tests.support import SMS, TEL, Api, expect_error

EMAIL = common_pb2.ADDRESS_TYPE_EMAIL
ALREADY_EXISTS = grpc.StatusCode.ALREADY_EXISTS
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


def participants_of(api: Api, conversation_id: str) -> list[participant_pb2.Participant]:
    return list(api.conversations.ListParticipants(cs.ListParticipantsRequest(conversation_id=conversation_id)).result)


def set_addresses(
    api: Api, person: participant_pb2.Participant, *addresses: common_pb2.Address
) -> participant_pb2.Participant:
    patch = participant_pb2.Participant(id=person.id, conversation_id=person.conversation_id, addresses=addresses)
    return api.conversations.UpdateParticipant(
        cs.UpdateParticipantRequest(participant=patch, update_mask=field_mask_pb2.FieldMask(paths=["addresses"]))
    )


def email_in(api: Api, peer: str, text: str = "follow-up") -> ip.IngestMessageResponse:
    return api.ingest.IngestMessage(
        ip.IngestMessageRequest(
            channel=common_pb2.CONVERSATION_TYPE_EMAIL,
            self=common_pb2.Address(type=EMAIL, target="support@shop.test"),
            peer=common_pb2.Address(type=EMAIL, target=peer),
            text=text,
        )
    )


def test_an_email_from_an_address_added_to_an_sms_person_joins_their_conversation(api: Api) -> None:
    """Rule b: the address belongs to a person, so the email joins that person's open conversation."""
    first = api.sms(peer="+15550100001", text="Order #5678: where is it?")
    (person,) = participants_of(api, first.conversation.id)
    assert person.contact_id and [(a.type, a.target) for a in person.addresses] == [(TEL, "+15550100001")]
    updated = set_addresses(
        api,
        person,
        common_pb2.Address(type=TEL, target="+15550100001"),
        common_pb2.Address(type=EMAIL, target="  Alice@Example.COM"),
    )
    assert [(a.type, a.target) for a in updated.addresses] == [(TEL, "+15550100001"), (EMAIL, "alice@example.com")]
    reply = email_in(api, "alice@example.com")
    assert reply.conversation.id == first.conversation.id and not reply.conversation_created
    assert reply.message.channel == common_pb2.CONVERSATION_TYPE_EMAIL
    (again,) = participants_of(api, first.conversation.id)
    assert again.last_active_channel == common_pb2.CONVERSATION_TYPE_EMAIL  # the same person wrote, by email


def test_an_address_held_by_another_person_is_already_exists_naming_the_holder_over_grpc_and_rest(
    hub: Hub, api: Api, tenant: Tenant
) -> None:
    alice = api.sms(peer="+15550100011")
    bob = api.sms(peer="+15550100012")
    (alice_person,) = participants_of(api, alice.conversation.id)
    (bob_person,) = participants_of(api, bob.conversation.id)
    patch = participant_pb2.Participant(
        id=bob_person.id,
        conversation_id=bob.conversation.id,
        addresses=[common_pb2.Address(type=TEL, target="+1 (555) 010-0011")],  # Alice's number, unnormalised
    )
    request = cs.UpdateParticipantRequest(participant=patch, update_mask=field_mask_pb2.FieldMask(paths=["addresses"]))
    error = expect_error(api.conversations.UpdateParticipant, request, ALREADY_EXISTS)
    assert alice_person.id in error.message and error.metadata["participant_id"] == alice_person.id
    assert (
        error.metadata["contact_id"] == alice_person.contact_id
        and error.metadata["field"] == "participant.addresses[0]"
    )
    # Adding a participant whose addresses span two people: the same answer, nothing written.
    both = participant_pb2.Participant(
        addresses=[
            common_pb2.Address(type=TEL, target="+15550100011"),
            common_pb2.Address(type=TEL, target="+15550100012"),
        ]
    )
    expect_error(
        api.conversations.AddParticipant,
        cs.AddParticipantRequest(conversation_id=bob.conversation.id, participant=both),
        ALREADY_EXISTS,
    )
    assert [p.id for p in participants_of(api, bob.conversation.id)] == [bob_person.id]
    assert hub.http_base is not None
    response = httpx.patch(
        f"{hub.http_base}/v1.0/conversations/{bob.conversation.id}/participants/{bob_person.id}",
        params={"updateMask": "addresses"},
        json={"addresses": [{"type": "ADDRESS_TYPE_TEL", "target": "+15550100011"}]},
        headers={"authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )
    assert response.status_code == 409, response.text
    assert alice_person.id in response.text
    with hub.engine.connect() as conn:
        table = ContactAddress.__table__
        holders = conn.execute(
            select(table.c.contact_id).where(
                table.c.customer_id == tenant.customer_id, table.c.target == "+15550100011"
            )
        ).all()
    assert [h.contact_id for h in holders] == [alice_person.contact_id]


def test_adding_a_known_person_to_another_conversation_makes_them_the_same_person_there(api: Api) -> None:
    alice = api.sms(peer="+15550100021")
    other = api.sms(peer="+15550100022")
    (alice_person,) = participants_of(api, alice.conversation.id)
    added = api.conversations.AddParticipant(
        cs.AddParticipantRequest(
            conversation_id=other.conversation.id,
            participant=participant_pb2.Participant(addresses=[common_pb2.Address(type=TEL, target="+15550100021")]),
        )
    )
    assert added.contact_id == alice_person.contact_id
    again = cs.AddParticipantRequest(
        conversation_id=other.conversation.id,
        participant=participant_pb2.Participant(addresses=[common_pb2.Address(type=TEL, target="+15550100021")]),
    )
    error = expect_error(api.conversations.AddParticipant, again, ALREADY_EXISTS)
    assert error.metadata["participant_id"] == added.id


def test_bad_addresses_are_invalid_argument_naming_the_field(api: Api) -> None:
    room = api.sms(peer="+15550100031")
    (person,) = participants_of(api, room.conversation.id)
    for target, type_ in (("not-an-email", EMAIL), ("12", TEL)):
        patch = participant_pb2.Participant(
            id=person.id,
            conversation_id=room.conversation.id,
            addresses=[common_pb2.Address(type=type_, target=target)],
        )
        request = cs.UpdateParticipantRequest(
            participant=patch, update_mask=field_mask_pb2.FieldMask(paths=["addresses"])
        )
        expect_error(
            api.conversations.UpdateParticipant,
            request,
            grpc.StatusCode.INVALID_ARGUMENT,
            "participant.addresses[0].target",
        )


def participant_updates(hub: Hub, customer_id: str) -> list[participant_pb2.Participant]:
    events = Event.__table__
    with hub.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.payload)
            .where(
                events.c.customer_id == customer_id,
                events.c.type == EVENT_TYPE_NAMES[event_pb2.EVENT_TYPE_PARTICIPANT_UPDATED],
            )
            .order_by(events.c.sequence)
        ).all()
    return [event_pb2.Event.FromString(r.payload).participant for r in rows]


def test_sms_stop_opts_the_person_out_of_sms_and_start_back_in(hub: Hub, api: Api, tenant: Tenant) -> None:
    first = api.sms(peer="+15550100041", text="hello")
    room = first.conversation.id
    stop = api.sms(peer="+15550100041", text="  Stop \n")
    assert stop.conversation.id == room and stop.message.text == "  Stop \n"  # the keyword is still stored
    (person,) = participants_of(api, room)
    assert list(person.opted_out_channels) == [SMS]
    updates = participant_updates(hub, tenant.customer_id)
    assert [list(u.opted_out_channels) for u in updates] == [[SMS]] and updates[0].id == person.id
    refused = expect_error(
        api.conversations.SendMessage,
        cs.SendMessageRequest(conversation_id=room, text="promo", channel=SMS),
        FAILED_PRECONDITION,
    )
    assert refused.reason == "CHANNEL_OPTED_OUT" and "message" in refused.message
    api.sms(peer="+15550100041", text="please STOP")  # not the whole text: no change
    assert list(participants_of(api, room)[0].opted_out_channels) == [SMS]
    api.sms(peer="+15550100041", text="start")
    assert list(participants_of(api, room)[0].opted_out_channels) == []
    no_account = expect_error(
        api.conversations.SendMessage,
        cs.SendMessageRequest(conversation_id=room, text="welcome back", channel=SMS),
        FAILED_PRECONDITION,
    )
    assert no_account.reason == "NO_USABLE_CHANNEL"  # no longer the opt-out: this tenant just has no SMS account
    assert [list(u.opted_out_channels) for u in participant_updates(hub, tenant.customer_id)] == [[SMS], []]


def test_opt_outs_are_read_and_set_through_the_participant(api: Api) -> None:
    room = api.sms(peer="+15550100051")
    (person,) = participants_of(api, room.conversation.id)
    patch = participant_pb2.Participant(
        id=person.id,
        conversation_id=room.conversation.id,
        opted_out_channels=[common_pb2.CONVERSATION_TYPE_EMAIL, SMS],
    )
    updated = api.conversations.UpdateParticipant(
        cs.UpdateParticipantRequest(
            participant=patch, update_mask=field_mask_pb2.FieldMask(paths=["opted_out_channels"])
        )
    )
    assert sorted(updated.opted_out_channels) == sorted([SMS, common_pb2.CONVERSATION_TYPE_EMAIL])
    refused = expect_error(
        api.conversations.SendToAddress,
        cs.SendToAddressRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target="+15559990000"),
            peer=common_pb2.Address(type=TEL, target="+15550100051"),
            text="hi",
        ),
        FAILED_PRECONDITION,
    )
    assert refused.reason == "CHANNEL_OPTED_OUT"


def test_email_addresses_are_checked_by_email_validator_and_lower_cased() -> None:
    assert normalize_target("email", " Ann@Example.COM ", default_region="US") == "ann@example.com"
    assert normalize_target("email", "support@shop.test", default_region="US") == "support@shop.test"
    for bad in ("ann@exa_mple.com", "ann@example..com", "a b@example.com"):
        with pytest.raises(AddressError, match="not an email address"):
            normalize_target("email", bad, default_region="US")


def test_set_opt_out_is_what_an_unsubscribe_link_calls(local_db: Database) -> None:
    """services.opt_outs.set_opt_out: by address, for a person known or not yet known; idempotent."""
    customer_id = create_customer(local_db.writer, "unsubscribe")
    set_opt_out(
        local_db, customer_id=customer_id, address=Address("email", "New@Example.com"), channel="email", opted_out=True
    )
    set_opt_out(
        local_db, customer_id=customer_id, address=Address("email", "new@example.com"), channel="email", opted_out=True
    )
    with local_db.read() as conn:
        key = contacts.address_key(customer_id, Address("email", "new@example.com"))
        holder = contacts.holders(conn, [key])[key]
        assert list(contacts.get(conn, customer_id, holder).opted_out_channels) == ["email"]
    set_opt_out(
        local_db, customer_id=customer_id, address=Address("email", "new@example.com"), channel="email", opted_out=False
    )
    with local_db.read() as conn:
        assert list(contacts.get(conn, customer_id, holder).opted_out_channels) == []
    with pytest.raises(InvalidArgument, match="channel"):
        set_opt_out(
            local_db,
            customer_id=customer_id,
            address=Address("email", "new@example.com"),
            channel="fax",
            opted_out=True,
        )


async def test_the_email_unsubscribe_link_opts_the_person_out_of_email(local_db: Database) -> None:
    """app.email_opt_out (what the email adapter's one-click POST calls) reaches set_opt_out with a bare address."""
    customer_id = create_customer(local_db.writer, "one-click")
    opt_out = email_opt_out(local_db)
    assert opt_out is not None
    await opt_out(customer_id, "Carol@Example.com")
    with local_db.read() as conn:
        key = contacts.address_key(customer_id, Address("email", "carol@example.com"))
        holder = contacts.holders(conn, [key])[key]
        assert list(contacts.get(conn, customer_id, holder).opted_out_channels) == ["email"]
