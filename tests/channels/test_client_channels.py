"""The typed Python client's sending, lifecycle and webhook-endpoint methods (issue 11), sync and async,
against a real `convhub serve` delivering to the Twilio stand-in (tests/channel_rig.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from convhub.client import AsyncConvhubClient, ConvhubClient, FailedPreconditionError, NotFoundError
from convhub.v1 import common_pb2, conversation_pb2, message_pb2, webhook_pb2
from tests.channel_rig import Rig, new_number
from tests.test_client import FAST, Client, call, close, collect

TEL = common_pb2.ADDRESS_TYPE_TEL
SMS = common_pb2.CONVERSATION_TYPE_MESSAGE
PUBLIC_HOOK = "https://93.184.216.34/convhub"  # a public address literal: no DNS, never called (see event_types)


@pytest.fixture(params=["sync", "async"])
async def client(request: pytest.FixtureRequest, rig: Rig) -> AsyncIterator[Client]:
    cls = ConvhubClient if request.param == "sync" else AsyncConvhubClient
    made = cls(rig.hub.grpc_target, token=rig.tenant.token, timeout=10.0, retry=FAST)
    yield made
    await close(made)


async def test_send_to_address_then_send_message_reach_the_provider(client: Client, rig: Rig) -> None:
    account = rig.twilio_account()
    peer = common_pb2.Address(type=TEL, target=new_number())
    request_id = uuid.uuid4().hex
    first = await call(
        client, "send_to_address", peer, account_id=account["id"], text="Your order has shipped", request_id=request_id
    )
    assert first.conversation_created and first.conversation.peer.target == peer.target
    assert first.message.direction == message_pb2.MESSAGE_DIRECTION_OUTGOING
    again = await call(
        client, "send_to_address", peer, account_id=account["id"], text="Your order has shipped", request_id=request_id
    )
    assert again.message.id == first.message.id  # a retried call returns the first message
    by_self = await call(
        client,
        "send_to_address",
        peer,
        self_address=common_pb2.Address(type=TEL, target=account["number"]),
        channel=SMS,
        text="Reminder",
    )
    assert by_self.conversation.id == first.conversation.id and not by_self.conversation_created
    reply = await call(client, "send_message", first.conversation.id, "Anything else?", channel=SMS)
    assert reply.conversation_id == first.conversation.id and reply.channel == SMS
    for message in (first.message, by_self.message, reply):
        done = rig.wait_message({"conversation_id": message.conversation_id, "id": message.id})
        assert done["status"] == "done", done
    sent = sorted(m["body"] for m in rig.standin.sent_to(peer.target))
    assert sent == ["Anything else?", "Reminder", "Your order has shipped"]  # each once


async def test_close_and_reopen(client: Client, rig: Rig) -> None:
    account = rig.twilio_account()
    peer = new_number()
    assert rig.inbound(account, peer, "hi").status_code == 200
    [room] = rig.conversations()
    closed = await call(client, "close_conversation", room["id"])
    assert closed.state == conversation_pb2.CONVERSATION_STATE_CLOSED
    assert (await call(client, "close_conversation", room["id"])).state == conversation_pb2.CONVERSATION_STATE_CLOSED
    assert rig.inbound(account, peer, "hello again").status_code == 200  # opens a new room
    with pytest.raises(FailedPreconditionError):
        await call(client, "reopen_conversation", room["id"])
    [new] = [c for c in rig.conversations() if c["id"] != room["id"]]
    await call(client, "close_conversation", new["id"])
    reopened = await call(client, "reopen_conversation", room["id"])
    assert reopened.state == conversation_pb2.CONVERSATION_STATE_OPEN
    with pytest.raises(NotFoundError):
        await call(client, "close_conversation", str(uuid.uuid4()))


async def test_webhook_endpoint_methods(client: Client) -> None:
    created = await call(
        client, "create_webhook_endpoint", PUBLIC_HOOK, event_types=["account_deleted"], description="ops"
    )
    assert created.secret.startswith("whsec_") and list(created.event_types) == ["account_deleted"]
    got = await call(client, "get_webhook_endpoint", created.id)
    assert got.url == PUBLIC_HOOK and not got.secret  # shown only on create and rotate
    assert [e.id for e in await collect(client, "iter_webhook_endpoints", page_size=1)] == [created.id]
    change = webhook_pb2.WebhookEndpoint(id=created.id, description="renamed", url="ignored: not in the mask")
    updated = await call(client, "update_webhook_endpoint", change, update_mask=["description"])
    assert (updated.description, updated.url) == ("renamed", PUBLIC_HOOK)
    rotated = await call(client, "rotate_webhook_secret", created.id)
    assert rotated.secret.startswith("whsec_") and rotated.secret != created.secret
    assert await collect(client, "iter_webhook_deliveries", created.id) == []
    page = await call(client, "list_webhook_deliveries", created.id, webhook_pb2.WEBHOOK_DELIVERY_STATUS_FAILED)
    assert list(page.result) == [] and page.next_page_token == ""
    with pytest.raises(NotFoundError):
        await call(client, "retry_webhook_delivery", created.id, str(uuid.uuid4()))
    deleted = await call(client, "delete_webhook_endpoint", created.id)
    assert deleted.id == created.id
    with pytest.raises(NotFoundError):
        await call(client, "get_webhook_endpoint", created.id)
