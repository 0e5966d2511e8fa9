"""Issue 11 "Tests" audit: an inbound message then the VoIPBIN reply call, end to end over a real `convhub serve`,
for LINE and Telnyx (Twilio: test_sending.py). The delivery worker must pick the provider the peer wrote on.

The LINE and Telnyx stand-ins (tests/provider_standins.py) run in the test's
event loop; the server runs as its own process pointed at them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
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

from tests.channel_rig import PUBLIC_URL
from tests.conftest import BACKENDS, Hub, new_tenant, running_hub
from tests.provider_standins import LineStandIn, TelnyxStandIn, serve

LINE_SECRET = "8c570fa6dd201bb328f1c1eac23a96d8"
LINE_TOKEN = "channel-access-token-" + "y" * 40
BOT = "U" + "2" * 32
TELNYX_KEY = "KEY" + "A" * 20
OUR_NUMBER = "+18445550002"
WAIT = 20.0


@pytest.fixture(params=BACKENDS)
async def world(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Hub, LineStandIn, TelnyxStandIn, httpx.AsyncClient]]:
    line, telnyx = LineStandIn(LINE_TOKEN), TelnyxStandIn(TELNYX_KEY)
    async with serve(line.routes()) as line_url, serve(telnyx.routes()) as telnyx_url:
        env = {
            "CONVHUB_PUBLIC_URL": PUBLIC_URL,
            "CONVHUB_LINE_API_URL": line_url,
            "CONVHUB_LINE_DATA_API_URL": line_url,
            "CONVHUB_TELNYX_API_URL": telnyx_url,
            "CONVHUB_TWILIO_API_URL": "http://127.0.0.1:9",
            "CONVHUB_DELIVERY_POLL_INTERVAL": "0.1",
        }
        hubs = running_hub(request.param, tmp_path, env=env)
        hub = await asyncio.to_thread(next, hubs)
        try:
            tenant = await asyncio.to_thread(new_tenant, hub)
            assert hub.http_base is not None
            headers = {"Authorization": f"Bearer {tenant.token}"}
            async with httpx.AsyncClient(base_url=hub.http_base, headers=headers, timeout=15) as rest:
                yield hub, line, telnyx, rest
        finally:
            await asyncio.to_thread(hubs.close)


async def created(rest: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await rest.post("/v1.0/conversation_accounts", json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


async def reply_and_wait(rest: httpx.AsyncClient, conversation_id: str, text: str) -> dict[str, Any]:
    """The VoIPBIN call, then the message once the worker has an outcome."""
    r = await rest.post(f"/v1.0/conversations/{conversation_id}/messages", json={"text": text})
    assert r.status_code == 200, r.text
    message: dict[str, Any] = r.json()
    deadline = time.monotonic() + WAIT
    while message["status"] == "progressing" and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        message = (await rest.get(f"/v1.0/conversations/{conversation_id}/messages/{message['id']}")).json()
    return message


async def test_a_line_message_is_answered_on_line_with_its_reply_token(
    world: tuple[Hub, LineStandIn, TelnyxStandIn, httpx.AsyncClient],
) -> None:
    _, line, _, rest = world
    account = await created(rest, {"type": "line", "name": "shop", "secret": LINE_SECRET, "token": LINE_TOKEN})
    user, reply_token = "U" + uuid.uuid4().hex, uuid.uuid4().hex
    line.reply_tokens.add(reply_token)
    event = {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": "01" + uuid.uuid4().hex[:24].upper(),
        "deliveryContext": {"isRedelivery": False},
        "replyToken": reply_token,
        "message": {"type": "text", "id": str(time.time_ns()), "quoteToken": "q", "text": "Is my order ready?"},
    }
    body = json.dumps({"destination": BOT, "events": [event]}).encode()
    signature = base64.b64encode(hmac.new(LINE_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    r = await rest.post(
        f"/v1.0/hooks/line/{account['id']}",
        content=body,
        headers={"x-line-signature": signature, "content-type": "application/json", "authorization": ""},
    )
    assert r.status_code == 200, r.text
    [room] = (await rest.get("/v1.0/conversations")).json()["result"]
    assert (room["type"], room["peer"]["target"], room["dialog_id"]) == ("line", user, user)
    message = await reply_and_wait(rest, room["id"], "Yes, it ships today!")
    assert (message["status"], message["channel"], message["account_id"]) == ("done", "line", account["id"])
    assert line.delivered == [
        {"replyToken": reply_token, "messages": [{"type": "text", "text": "Yes, it ships today!"}]}
    ]  # the reply API, within the token's lifetime


async def test_a_telnyx_sms_is_answered_over_telnyx(
    world: tuple[Hub, LineStandIn, TelnyxStandIn, httpx.AsyncClient],
) -> None:
    _, _, telnyx, rest = world
    key = Ed25519PrivateKey.generate()
    public_key = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    account = await created(
        rest,
        {
            "type": "sms",
            "provider": "telnyx",
            "name": "telnyx",
            "address": {"type": "tel", "target": OUR_NUMBER},
            "credentials": {"api_key": TELNYX_KEY, "public_key": public_key},
        },
    )
    peer = f"+1866555{uuid.uuid4().int % 10**4:04d}"
    event = {
        "data": {
            "record_type": "event",
            "id": str(uuid.uuid4()),
            "event_type": "message.received",
            "occurred_at": "2026-01-23T18:10:02.574Z",
            "payload": {
                "record_type": "message",
                "direction": "inbound",
                "id": str(uuid.uuid4()),
                "type": "SMS",
                "from": {"phone_number": peer},
                "to": [{"phone_number": OUR_NUMBER, "status": "delivered"}],
                "text": "Where is my parcel?",
                "media": [],
            },
        },
        "meta": {"attempt": 1},
    }
    body = json.dumps(event).encode()
    ts = str(int(time.time()))
    headers = {
        "telnyx-signature-ed25519": base64.b64encode(key.sign(ts.encode() + b"|" + body)).decode(),
        "telnyx-timestamp": ts,
        "content-type": "application/json",
        "authorization": "",
    }
    r = await rest.post(f"/v1.0/hooks/telnyx/{account['id']}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    [room] = (await rest.get("/v1.0/conversations")).json()["result"]
    assert (room["type"], room["peer"]["target"], room["dialog_id"]) == ("message", peer, "")
    message = await reply_and_wait(rest, room["id"], "Out for delivery.")
    assert (message["status"], message["channel"], message["account_id"]) == ("done", "message", account["id"])
    [sent] = telnyx.messages.values()
    assert (sent["from"]["phone_number"], sent["to"][0]["phone_number"], sent["text"]) == (
        OUR_NUMBER,
        peer,
        "Out for delivery.",
    )
    assert message["transaction_id"] == sent["id"]
