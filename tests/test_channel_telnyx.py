"""Telnyx: send and look-up against a loopback stand-in; the Ed25519-signed hook into a real ingest and database.

Hooks are signed here with a freshly generated Ed25519 key (cryptography's
signer, not the adapter's verifier), over `"{timestamp}|{body}"` as Telnyx does.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from convhub.server.channels.adapter import Accepted, CannotTell, ChannelAccount, Outbound, SendFailed
from convhub.server.channels.telnyx import TelnyxAdapter
from convhub.server.domain.addresses import Address
from convhub.server.store.db import Database
from tests.hook_harness import HookHarness, hook_db, hook_harness
from tests.provider_standins import Scripted, TelnyxStandIn, serve

__all__ = ["hook_db"]  # the module-scoped database fixture, per backend

API_KEY = "KEY0123456789ABCDEF"
OUR_NUMBER = "+18445550001"
THEIR_NUMBER = "+18665550001"


def account(credentials: dict[str, str] | None = None) -> ChannelAccount:
    return ChannelAccount(
        id=str(uuid.uuid4()),
        customer_id=str(uuid.uuid4()),
        channel="message",
        provider="telnyx",
        address=Address("tel", OUR_NUMBER),
        credentials={"api_key": API_KEY} if credentials is None else credentials,
    )


def outbound(**fields: Any) -> Outbound:
    values: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
        "sender": Address("tel", OUR_NUMBER),
        "recipient": Address("tel", THEIR_NUMBER),
        "text": "Your order has been shipped!",
    }
    values.update(fields)
    return Outbound(**values)


@pytest.fixture
async def telnyx() -> AsyncIterator[tuple[TelnyxStandIn, TelnyxAdapter]]:
    stand_in = TelnyxStandIn(API_KEY)
    async with serve(stand_in.routes()) as url:
        yield stand_in, TelnyxAdapter(url)


# --- sending ------------------------------------------------------------------


async def test_send_posts_telnyx_fields_and_returns_the_message_id(telnyx: tuple[TelnyxStandIn, TelnyxAdapter]) -> None:
    stand_in, adapter = telnyx
    media = {"type": "image", "url": "https://example.com/a.png", "mime_type": "image/png", "filename": "", "size": 0}
    async with httpx.AsyncClient(timeout=5) as http:
        accepted = await adapter.send(
            http, account(), outbound(medias=[media], status_callback_url="https://hub.example/v1.0/hooks/telnyx/x")
        )
    assert accepted.delivery_status == "queued"
    assert accepted.provider_message_id in stand_in.messages
    ((_, _, headers, body),) = stand_in.calls("/v2/messages")
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(body) == {
        "from": OUR_NUMBER,
        "to": THEIR_NUMBER,
        "text": "Your order has been shipped!",
        "media_urls": ["https://example.com/a.png"],
        "webhook_url": "https://hub.example/v1.0/hooks/telnyx/x",
    }


async def test_send_4xx_is_final_with_telnyx_code_and_detail(telnyx: tuple[TelnyxStandIn, TelnyxAdapter]) -> None:
    _, adapter = telnyx
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), outbound(recipient=Address("tel", "12345")))
        assert not failed.value.retryable
        assert failed.value.code == "40310"
        assert "E.164" in failed.value.message
        with pytest.raises(SendFailed) as unauthorized:
            await adapter.send(http, account({"api_key": "wrong"}), outbound())
        assert (unauthorized.value.code, unauthorized.value.retryable) == ("10009", False)


@pytest.mark.parametrize(
    ("scripted", "retry_after"),
    [
        (Scripted(500, {"errors": [{"code": "10007", "title": "Unexpected error"}]}), None),
        (Scripted(503, "<html>bad gateway</html>"), None),
        (Scripted(429, {"errors": [{"code": "10011", "title": "Too many requests"}]}, {"Retry-After": "7"}), 7.0),
    ],
)
async def test_send_5xx_and_429_are_retryable_honouring_retry_after(
    telnyx: tuple[TelnyxStandIn, TelnyxAdapter], scripted: Scripted, retry_after: float | None
) -> None:
    stand_in, adapter = telnyx
    stand_in.fail_next("/v2/messages", scripted)
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), outbound())
        assert failed.value.retryable
        assert failed.value.retry_after == retry_after
        assert not stand_in.messages
        recovered = await adapter.send(http, account(), outbound())  # the outage is over
    assert recovered.provider_message_id in stand_in.messages


async def test_send_without_an_answer_is_retryable(telnyx: tuple[TelnyxStandIn, TelnyxAdapter]) -> None:
    stand_in, adapter = telnyx
    stand_in.fail_next("/v2/messages", Scripted(hang=True))
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), outbound())
    assert (failed.value.code, failed.value.retryable) == ("timeout", True)


async def test_find_sent_looks_up_a_known_id_and_cannot_tell_without_one(
    telnyx: tuple[TelnyxStandIn, TelnyxAdapter],
) -> None:
    stand_in, adapter = telnyx
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(CannotTell):
            await adapter.find_sent(http, account(), outbound(), since_us=0)
        accepted = await adapter.send(http, account(), outbound())
        stand_in.messages[accepted.provider_message_id]["to"][0]["status"] = "delivered"
        found = await adapter.find_sent(
            http, account(), outbound(provider_message_id=accepted.provider_message_id), since_us=0
        )
        assert found == Accepted(accepted.provider_message_id, "delivered")
        missing = await adapter.find_sent(http, account(), outbound(provider_message_id=str(uuid.uuid4())), since_us=0)
        assert missing is None
        stand_in.fail_next("/v2/messages/", Scripted(502))
        with pytest.raises(CannotTell):
            await adapter.find_sent(
                http, account(), outbound(provider_message_id=accepted.provider_message_id), since_us=0
            )


# --- hooks --------------------------------------------------------------------


class Signer:
    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        raw = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.b64encode(raw).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        ts = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.key.sign(ts.encode() + b"|" + body)
        return {
            "telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": ts,
            "content-type": "application/json",
        }


def received(message_id: str = "", text: str = "Hello, World!", media: list[dict[str, Any]] | None = None) -> bytes:
    """A `message.received` event as Telnyx documents it."""
    event = {
        "data": {
            "record_type": "event",
            "id": str(uuid.uuid4()),
            "event_type": "message.received",
            "occurred_at": "2026-01-23T18:10:02.574Z",
            "payload": {
                "record_type": "message",
                "direction": "inbound",
                "id": message_id or str(uuid.uuid4()),
                "type": "MMS" if media else "SMS",
                "messaging_profile_id": "0f512bda-ae1e-4597-8e11-e5f5686b97d3",
                "from": {"phone_number": THEIR_NUMBER, "carrier": "T-MOBILE USA, INC.", "line_type": "Wireless"},
                "to": [{"phone_number": OUR_NUMBER, "status": "delivered", "carrier": "TELNYX LLC"}],
                "cc": [],
                "text": text,
                "media": media or [],
                "encoding": "GSM-7",
                "parts": 1,
                "received_at": "2026-01-23T18:10:02.574Z",
                "errors": [],
            },
        },
        "meta": {"attempt": 1, "delivered_to": "https://hub.example/hooks"},
    }
    return json.dumps(event).encode()


def finalized(message_id: str, status: str, errors: list[dict[str, Any]] | None = None) -> bytes:
    event = {
        "data": {
            "record_type": "event",
            "id": str(uuid.uuid4()),
            "event_type": "message.finalized",
            "occurred_at": "2026-01-23T18:10:04.000Z",
            "payload": {
                "record_type": "message",
                "direction": "outbound",
                "id": message_id,
                "type": "SMS",
                "from": {"phone_number": OUR_NUMBER},
                "to": [{"phone_number": THEIR_NUMBER, "status": status}],
                "text": "Your order has been shipped!",
                "errors": errors or [],
            },
        },
        "meta": {"attempt": 1},
    }
    return json.dumps(event).encode()


@pytest.fixture
async def hooks(hook_db: Database, tmp_path: Path) -> AsyncIterator[tuple[HookHarness, Signer, str]]:
    async with hook_harness(hook_db, tmp_path, lambda media: TelnyxAdapter("http://127.0.0.1:9")) as (harness, _):
        signer = Signer()
        account_id = harness.add_account(
            "telnyx", {"api_key": API_KEY, "public_key": signer.public_key}, Address("tel", OUR_NUMBER)
        )
        yield harness, signer, account_id


async def post(harness: HookHarness, account_id: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{harness.base_url}/v1.0/hooks/telnyx/{account_id}", content=body, headers=headers)


async def test_inbound_message_opens_a_room_and_writes_events(hooks: tuple[HookHarness, Signer, str]) -> None:
    harness, signer, account_id = hooks
    body = received("tx-1", "Hi, is my order ready?")
    response = await post(harness, account_id, body, signer.headers(body))
    assert response.status_code == 200, response.text
    (room,) = harness.conversations()
    assert (room.type, room.self_target, room.peer_target, room.account_id) == (
        "message",
        OUR_NUMBER,
        THEIR_NUMBER,
        account_id,
    )
    (message,) = harness.messages()
    assert (message.text, message.transaction_id, message.direction) == ("Hi, is my order ready?", "tx-1", "incoming")
    assert harness.event_types()[-2:] == ["conversation_message_created", "conversation_message_received"]
    assert "conversation_created" in harness.event_types()


async def test_inbound_mms_keeps_its_media(hooks: tuple[HookHarness, Signer, str]) -> None:
    harness, signer, account_id = hooks
    media = [
        {"url": "https://media.telnyx.com/a.jpg", "content_type": "image/jpeg", "sha256": None, "size": 1234},
        {"url": "https://media.telnyx.com/b.vcf", "content_type": "text/vcard", "size": None},
    ]
    body = received(text="", media=media)
    assert (await post(harness, account_id, body, signer.headers(body))).status_code == 200
    (message,) = harness.messages()
    assert [(m["type"], m["url"], m["mime_type"], m["size"]) for m in message.medias] == [
        ("image", "https://media.telnyx.com/a.jpg", "image/jpeg", 1234),
        ("file", "https://media.telnyx.com/b.vcf", "text/vcard", 0),
    ]


async def test_redelivered_message_answers_200_and_stores_nothing_new(hooks: tuple[HookHarness, Signer, str]) -> None:
    harness, signer, account_id = hooks
    body = received("tx-again")
    for _ in range(3):
        assert (await post(harness, account_id, body, signer.headers(body))).status_code == 200
    assert len(harness.messages()) == 1
    assert harness.event_types().count("conversation_message_created") == 1


@pytest.mark.parametrize("case", ["forged", "other_key", "missing", "stale", "future", "tampered"])
async def test_bad_signature_answers_401_and_stores_nothing(hooks: tuple[HookHarness, Signer, str], case: str) -> None:
    harness, signer, account_id = hooks
    body = received()
    headers = signer.headers(body)
    if case == "forged":
        headers["telnyx-signature-ed25519"] = base64.b64encode(b"\x01" * 64).decode()
    elif case == "other_key":
        headers = Signer().headers(body)
    elif case == "missing":
        del headers["telnyx-signature-ed25519"]
    elif case == "stale":  # correctly signed, six minutes ago: a replay
        headers = signer.headers(body, int(time.time()) - 360)
    elif case == "future":
        headers = signer.headers(body, int(time.time()) + 360)
    elif case == "tampered":
        body = body.replace(b"Hello, World!", b"Hello, Mallory")
    response = await post(harness, account_id, body, headers)
    assert response.status_code == 401, response.text
    assert harness.messages() == []


async def test_recent_timestamp_within_tolerance_is_accepted(hooks: tuple[HookHarness, Signer, str]) -> None:
    harness, signer, account_id = hooks
    body = received()
    response = await post(harness, account_id, body, signer.headers(body, int(time.time()) - 240))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["data"]["payload"]["from"].pop("phone_number"), "data.payload.from.phone_number"),
        (lambda e: e["data"]["payload"].__setitem__("to", []), "data.payload.to"),
        (lambda e: e["data"]["payload"].pop("id"), "data.payload.id"),
        (lambda e: e["data"]["payload"]["media"].append({"content_type": "image/png"}), "data.payload.media[0].url"),
        (lambda e: e["data"].pop("event_type"), "data.event_type"),
        (lambda e: e["data"]["payload"]["from"].__setitem__("phone_number", "not a number"), "peer.target"),
    ],
)
async def test_malformed_payload_answers_400_naming_the_field(
    hooks: tuple[HookHarness, Signer, str], mutate: Any, field: str
) -> None:
    harness, signer, account_id = hooks
    event = json.loads(received())
    mutate(event)
    body = json.dumps(event).encode()
    response = await post(harness, account_id, body, signer.headers(body))
    assert response.status_code == 400, response.text
    violations = response.json()["error"]["details"][-1]["field_violations"]
    assert violations[0]["field"] == field
    assert harness.messages() == []


@pytest.mark.parametrize("body", [b'{"data": ', b"[" * 100_000 + b"]" * 100_000, b'{"data": NaN}', b"[]"])
async def test_body_that_is_not_a_json_object_answers_400(hooks: tuple[HookHarness, Signer, str], body: bytes) -> None:
    harness, signer, account_id = hooks
    response = await post(harness, account_id, body, signer.headers(body))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][-1]["field_violations"][0]["field"] in ("body", "data")


async def test_unknown_deleted_or_other_provider_account_answers_404(hooks: tuple[HookHarness, Signer, str]) -> None:
    harness, signer, account_id = hooks
    body = received()
    assert (await post(harness, str(uuid.uuid4()), body, signer.headers(body))).status_code == 404
    assert (await post(harness, "not-a-uuid", body, signer.headers(body))).status_code == 404
    line_account = harness.add_account("line", {"channel_secret": "s", "channel_access_token": "t"})
    assert (await post(harness, line_account, body, signer.headers(body))).status_code == 404
    harness.delete_account(account_id)
    assert (await post(harness, account_id, body, signer.headers(body))).status_code == 404
    assert harness.messages() == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [("delivered", "delivered"), ("delivery_failed", "undelivered"), ("sending_failed", "failed"), ("sent", "sent")],
)
async def test_finalized_and_sent_events_become_receipts(
    hooks: tuple[HookHarness, Signer, str], status: str, expected: str
) -> None:
    harness, signer, account_id = hooks
    errors = [{"code": "40300", "title": "Blocked as spam", "detail": "Message flagged"}] if "failed" in status else []
    body = finalized("out-1", status, errors)
    response = await post(harness, account_id, body, signer.headers(body))
    assert response.status_code == 200, response.text
    (receipt,) = harness.receipts
    assert (receipt.account_id, receipt.provider_message_id, receipt.delivery_status) == (account_id, "out-1", expected)
    if errors:
        assert (receipt.error_code, receipt.error_message) == ("40300", "Blocked as spam: Message flagged")
    assert harness.messages() == []


async def test_receipts_on_the_status_path_and_unknown_events_are_accepted(
    hooks: tuple[HookHarness, Signer, str],
) -> None:
    harness, signer, account_id = hooks
    body = finalized("out-2", "delivered")
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{harness.base_url}/v1.0/hooks/telnyx/{account_id}/status", content=body, headers=signer.headers(body)
        )
        assert response.status_code == 200
        other = json.dumps({"data": {"event_type": "number_order.complete", "payload": {}}}).encode()
        response = await http.post(
            f"{harness.base_url}/v1.0/hooks/telnyx/{account_id}", content=other, headers=signer.headers(other)
        )
        assert response.status_code == 200
    assert [r.provider_message_id for r in harness.receipts] == ["out-2"]
