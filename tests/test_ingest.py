"""IngestMessage: room matching, normalisation, idempotency, bad input (DESIGN.md invariants 2, 3, 6)."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from sqlalchemy import func, select

from convhub.server.store.models import Conversation, Event, Message
from convhub.v1 import common_pb2, ingest_service_pb2_grpc
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import ingest_service_pb2 as ip
from tests.conftest import Hub, Tenant
from tests.support import SMS, TEL, Api, expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


def count(hub: Hub, model: type, customer_id: str) -> int:
    table = model.__table__  # type: ignore[attr-defined]
    with hub.engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(table).where(table.c.customer_id == customer_id)
        ).scalar_one()


def test_first_inbound_message_opens_a_room_and_later_ones_join_it(api: Api) -> None:
    first = api.sms(text="one")
    second = api.sms(text="two")
    assert first.conversation_created and not second.conversation_created
    assert first.conversation.id == second.conversation.id
    assert first.conversation.state == 1  # open
    assert first.message.direction == 1 and first.message.status == 2  # incoming, done
    page = api.conversations.ListMessages(cs.ListMessagesRequest(conversation_id=first.conversation.id))
    assert [m.text for m in page.result] == ["one", "two"]


def test_phone_numbers_are_normalised_to_e164_before_matching(api: Api) -> None:
    a = api.sms(peer="+1 (555) 000-2222", self_="555.999.0000")
    b = api.sms(peer="15550002222", self_="+15559990000")
    assert a.conversation.id == b.conversation.id
    assert a.conversation.peer.target == "+15550002222"
    assert a.conversation.self.target == "+15559990000"


def test_email_addresses_are_lower_cased_before_matching(api: Api) -> None:
    def email(peer: str) -> ip.IngestMessageResponse:
        return api.ingest.IngestMessage(
            ip.IngestMessageRequest(
                channel=common_pb2.CONVERSATION_TYPE_EMAIL,
                self=common_pb2.Address(target="Support@Example.com"),
                peer=common_pb2.Address(target=peer),
                subject="help",
            )
        )

    assert email("Alice@Example.COM").conversation.id == email("alice@example.com").conversation.id
    assert email("alice@example.com").conversation.peer.target == "alice@example.com"


def test_same_peer_on_another_self_address_joins_their_open_conversation_else_opens_another_room(api: Api) -> None:
    """Room rule b (issue 9): a known person's message follows them to their open conversation, whatever the
    address it reached; once that is closed, the key rule (c) opens a room for the new (channel, self, peer)."""
    base = api.sms(peer="+15550003333")
    other_self = api.sms(peer="+15550003333", self_="+15559990001")
    assert other_self.conversation.id == base.conversation.id and not other_self.conversation_created
    conv = base.conversation
    conv.state = 2  # closed
    api.conversations.UpdateConversation(
        cs.UpdateConversationRequest(conversation=conv, update_mask={"paths": ["state"]})
    )
    reopened = api.sms(peer="+15550003333", self_="+15559990001")
    assert reopened.conversation_created and reopened.conversation.id != base.conversation.id


def test_closed_conversation_is_not_reused(api: Api) -> None:
    first = api.sms(peer="+15550004444")
    conv = first.conversation
    conv.state = 2  # closed
    api.conversations.UpdateConversation(
        cs.UpdateConversationRequest(conversation=conv, update_mask={"paths": ["state"]})
    )
    again = api.sms(peer="+15550004444")
    assert again.conversation_created and again.conversation.id != conv.id


def test_repeated_provider_message_id_returns_the_first_message_and_stores_nothing(
    hub: Hub, tenant: Tenant, api: Api
) -> None:
    first = api.sms(transaction_id="SM123", text="original")
    before = (count(hub, Message, tenant.customer_id), count(hub, Event, tenant.customer_id))
    again = api.sms(transaction_id="SM123", text="retry with other text")
    assert again.duplicate and not first.duplicate
    assert again.message == first.message
    assert (count(hub, Message, tenant.customer_id), count(hub, Event, tenant.customer_id)) == before


def test_provider_message_ids_are_scoped_to_our_address(api: Api) -> None:
    a = api.sms(transaction_id="SM-scope", self_="+15559990000")
    b = api.sms(transaction_id="SM-scope", self_="+15559990002")
    assert not b.duplicate and a.message.id != b.message.id


def test_provider_message_ids_are_scoped_to_the_account_when_one_is_given(api: Api) -> None:
    from convhub.v1 import account_pb2
    from convhub.v1 import account_service_pb2 as acs

    ours = common_pb2.Address(type=TEL, target="+15559990044")
    accounts = [
        api.accounts.CreateAccount(
            acs.CreateAccountRequest(account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, address=ours))
        )
        for _ in range(2)
    ]

    def via(account_id: str) -> ip.IngestMessageResponse:
        return api.ingest.IngestMessage(
            ip.IngestMessageRequest(
                account_id=account_id,
                peer=common_pb2.Address(type=TEL, target="+15550001144"),
                text="hi",
                transaction_id="SM-acct",
            )
        )

    first, second = via(accounts[0].id), via(accounts[1].id)  # one number, two accounts: two scopes
    without_account = api.sms(self_="+15559990044", peer="+15550001144", transaction_id="SM-acct")
    assert not second.duplicate and not without_account.duplicate
    assert len({first.message.id, second.message.id, without_account.message.id}) == 3
    assert via(accounts[0].id).duplicate


def test_repeated_request_id_returns_the_first_result(hub: Hub, tenant: Tenant, api: Api) -> None:
    first = api.sms(request_id="req-1")
    n = count(hub, Message, tenant.customer_id)
    again = api.sms(request_id="req-1", text="different")
    assert again.duplicate and again.message.id == first.message.id
    assert count(hub, Message, tenant.customer_id) == n


async def test_concurrent_inbound_from_same_new_peer_opens_one_room(hub: Hub, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(hub.grpc_target) as ch:
        stub = ingest_service_pb2_grpc.IngestServiceStub(ch)

        async def one(i: int) -> ip.IngestMessageResponse:
            return await stub.IngestMessage(
                ip.IngestMessageRequest(
                    channel=SMS,
                    self=common_pb2.Address(type=TEL, target="+15559990000"),
                    peer=common_pb2.Address(type=TEL, target="+15557770000"),
                    text=f"burst {i}",
                ),
                metadata=tenant.metadata,
                timeout=30,
            )

        results = await asyncio.gather(*(one(i) for i in range(50)))
    assert len({r.conversation.id for r in results}) == 1
    assert sum(r.conversation_created for r in results) == 1
    assert count(hub, Conversation, tenant.customer_id) == 1
    assert count(hub, Message, tenant.customer_id) == 50


async def test_concurrent_retries_of_one_provider_message_store_it_once(hub: Hub, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(hub.grpc_target) as ch:
        stub = ingest_service_pb2_grpc.IngestServiceStub(ch)
        request = ip.IngestMessageRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target="+15559990000"),
            peer=common_pb2.Address(type=TEL, target="+15557770001"),
            text="once",
            transaction_id="SM-race",
        )
        results = await asyncio.gather(
            *(stub.IngestMessage(request, metadata=tenant.metadata, timeout=30) for _ in range(20))
        )
    assert len({r.message.id for r in results}) == 1
    assert count(hub, Message, tenant.customer_id) == 1


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"self": common_pb2.Address(type=TEL, target="+15559990000"), "text": "x"}, "peer"),
        ({"peer": common_pb2.Address(type=TEL, target="+15550001111"), "text": "x"}, "self"),
        (
            {
                "self": common_pb2.Address(type=TEL, target="+15559990000"),
                "peer": common_pb2.Address(type=TEL, target="not a number"),
                "text": "x",
            },
            "peer.target",
        ),
        (
            {
                "self": common_pb2.Address(type=TEL, target="+15559990000"),
                "peer": common_pb2.Address(type=common_pb2.ADDRESS_TYPE_EMAIL, target="a@b.example"),
                "text": "x",
            },
            "peer.type",
        ),
        (
            {
                "self": common_pb2.Address(type=TEL, target="+15559990000"),
                "peer": common_pb2.Address(type=TEL, target="+15550001111"),
            },
            "text",
        ),
        (
            {
                "self": common_pb2.Address(type=TEL, target="+15559990000"),
                "peer": common_pb2.Address(type=TEL, target="+15550001111"),
                "text": "x" * 20000,
            },
            "text",
        ),
        (
            {
                "self": common_pb2.Address(type=TEL, target="+15559990000"),
                "peer": common_pb2.Address(type=TEL, target="+15550001111"),
                "text": "x",
                "account_id": "not-a-uuid",
            },
            "account_id",
        ),
        (
            {
                "self": common_pb2.Address(type=TEL, target="+15559990000"),
                "peer": common_pb2.Address(type=TEL, target="+15550001111"),
                "medias": [common_pb2.Media(type="image")],
            },
            "medias[0].url",
        ),
    ],
)
def test_bad_ingest_input_names_the_field_and_writes_nothing(
    hub: Hub, tenant: Tenant, api: Api, fields: dict, field: str
) -> None:
    channel = {} if field == "channel" else {"channel": SMS}
    expect_error(api.ingest.IngestMessage, ip.IngestMessageRequest(**channel, **fields), INVALID, field)
    assert count(hub, Conversation, tenant.customer_id) == 0
    assert count(hub, Message, tenant.customer_id) == 0
    assert count(hub, Event, tenant.customer_id) == 0


def test_ingest_without_channel_or_account_is_rejected(api: Api) -> None:
    request = ip.IngestMessageRequest(
        self=common_pb2.Address(type=TEL, target="+15559990000"),
        peer=common_pb2.Address(type=TEL, target="+15550001111"),
        text="x",
    )
    expect_error(api.ingest.IngestMessage, request, INVALID, "channel")


def test_ingest_naming_another_customers_account_is_not_found(
    channel: grpc.Channel, api: Api, other_tenant: Tenant
) -> None:
    from convhub.v1 import account_pb2
    from convhub.v1 import account_service_pb2 as acs

    other = Api.for_tenant(channel, other_tenant.metadata)
    account = other.accounts.CreateAccount(
        acs.CreateAccountRequest(account=account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name="theirs"))
    )
    request = ip.IngestMessageRequest(
        account_id=account.id,
        self=common_pb2.Address(type=TEL, target="+15559990000"),
        peer=common_pb2.Address(type=TEL, target="+15550001111"),
        text="x",
    )
    expect_error(api.ingest.IngestMessage, request, grpc.StatusCode.NOT_FOUND)


async def test_concurrent_calls_with_one_request_id_store_one_message(hub: Hub, tenant: Tenant) -> None:
    async with grpc.aio.insecure_channel(hub.grpc_target) as ch:
        stub = ingest_service_pb2_grpc.IngestServiceStub(ch)
        request = ip.IngestMessageRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target="+15559990000"),
            peer=common_pb2.Address(type=TEL, target="+15557770002"),
            text="once",
            request_id="req-race",
        )
        results = await asyncio.gather(
            *(stub.IngestMessage(request, metadata=tenant.metadata, timeout=30) for _ in range(20))
        )
    assert len({r.message.id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert count(hub, Message, tenant.customer_id) == 1
    assert count(hub, Event, tenant.customer_id) == 4  # conversation, participant, message created + received
