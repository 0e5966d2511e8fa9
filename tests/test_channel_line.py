"""LINE: reply and push against a loopback stand-in; the signed webhook into a real ingest and database.

Webhook bodies are checked by the official `line-bot-sdk` before they are
sent: its WebhookParser must accept the signature (computed here, not by
the adapter's verifier) and read each event as the type we meant, so the
payloads have LINE's real shape.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from linebot.v3 import WebhookParser
from linebot.v3.webhooks import FollowEvent, MessageEvent, UnfollowEvent

from convhub.server.channels.adapter import CannotTell, ChannelAccount, Outbound, SendFailed
from convhub.server.channels.line import LineAdapter, line_messages, retry_key
from convhub.server.domain.addresses import Address
from convhub.server.store import messages as messages_store
from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import Database
from convhub.server.store.media_files import MediaFiles
from tests.conftest import Hub, Tenant
from tests.hook_harness import HookHarness, hook_db, hook_harness
from tests.provider_standins import LineStandIn, Scripted, serve

__all__ = ["hook_db"]  # the module-scoped database fixture, per backend

SECRET = "8c570fa6dd201bb328f1c1eac23a96d8"
TOKEN = "channel-access-token-" + "x" * 40
BOT = "U" + "0" * 32
USER = "U" + "4af4980629" * 3 + "ab"
OTHER_USER = "U" + "1" * 32


def account(credentials: dict[str, str] | None = None) -> ChannelAccount:
    return ChannelAccount(
        id=str(uuid.uuid4()),
        customer_id=str(uuid.uuid4()),
        channel="line",
        provider="line",
        address=Address("line", BOT),
        credentials={"channel_secret": SECRET, "channel_access_token": TOKEN} if credentials is None else credentials,
    )


def outbound(**fields: Any) -> Outbound:
    values: dict[str, Any] = {
        "message_id": str(uuid.uuid4()),
        "job_id": str(uuid.uuid4()),
        "sender": Address("line", BOT),
        "recipient": Address("line", USER),
        "text": "Your order has been shipped!",
    }
    values.update(fields)
    return Outbound(**values)


@pytest.fixture
async def line_api() -> AsyncIterator[tuple[LineStandIn, str]]:
    stand_in = LineStandIn(TOKEN)
    async with serve(stand_in.routes()) as url:
        yield stand_in, url


def adapter_for(url: str, tmp_path: Path) -> LineAdapter:
    return LineAdapter(url, url, MediaFiles(tmp_path / "media", max_total_bytes=1 << 20, max_item_bytes=1 << 16))


# --- sending ------------------------------------------------------------------


async def test_push_carries_a_retry_key_derived_from_the_job(line_api: tuple[LineStandIn, str], tmp_path: Path) -> None:
    stand_in, url = line_api
    adapter = adapter_for(url, tmp_path)
    job = outbound()
    async with httpx.AsyncClient(timeout=5) as http:
        accepted = await adapter.send(http, account(), job)
    assert accepted.delivery_status == "sent" and accepted.provider_message_id
    ((_, _, headers, body),) = stand_in.calls("/v2/bot/message/push")
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-line-retry-key"] == str(uuid.uuid5(uuid.UUID("5d0d7c52-3c59-4a43-9a4e-1f0b5b8f6c1e"), job.job_id))
    assert json.loads(body) == {"to": USER, "messages": [{"type": "text", "text": "Your order has been shipped!"}]}


async def test_retried_push_keeps_its_retry_key_and_is_delivered_once(
    line_api: tuple[LineStandIn, str], tmp_path: Path
) -> None:
    """The first attempt reaches LINE but its answer never arrives; the retry answers 409: already accepted."""
    stand_in, url = line_api
    adapter = adapter_for(url, tmp_path)
    job = outbound()
    stand_in.fail_next("/v2/bot/message/push", Scripted(accept_then_hang=True))
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), job)
        assert failed.value.retryable
        again = await adapter.send(http, account(), job)  # the worker's retry: the same job
    assert again.delivery_status == "sent"
    assert again.provider_message_id == stand_in.retry_keys[retry_key(job.job_id)], "the first attempt's message id"
    keys = {headers["x-line-retry-key"] for _, _, headers, _ in stand_in.calls("/v2/bot/message/push")}
    assert keys == {retry_key(job.job_id)}
    assert len(stand_in.calls("/v2/bot/message/push")) == 2
    assert len(stand_in.delivered) == 1
    assert retry_key(job.job_id) != retry_key(outbound().job_id)


async def test_fresh_reply_token_uses_the_reply_api(line_api: tuple[LineStandIn, str], tmp_path: Path) -> None:
    stand_in, url = line_api
    adapter = adapter_for(url, tmp_path)
    stand_in.reply_tokens.add("rt-1")
    async with httpx.AsyncClient(timeout=5) as http:
        first = await adapter.send(http, account(), outbound(reply_token="rt-1"))
        assert first.provider_message_id
        assert len(stand_in.calls("/v2/bot/message/reply")) == 1
        assert stand_in.calls("/v2/bot/message/push") == []
        # The token is spent (or expired): LINE answers 400 Invalid reply token, and the message goes by push.
        second = await adapter.send(http, account(), outbound(reply_token="rt-1"))
    assert second.provider_message_id
    assert len(stand_in.calls("/v2/bot/message/push")) == 1
    assert len(stand_in.delivered) == 2
    ((_, _, headers, body),) = stand_in.calls("/v2/bot/message/reply")[:1]
    assert json.loads(body)["replyToken"] == "rt-1" and "x-line-retry-key" not in headers


@pytest.mark.parametrize("scripted", [Scripted(500, {"message": "Internal error"}), Scripted(hang=True)])
async def test_unconfirmed_reply_is_final_and_never_pushed(
    line_api: tuple[LineStandIn, str], tmp_path: Path, scripted: Scripted
) -> None:
    stand_in, url = line_api
    adapter = adapter_for(url, tmp_path)
    stand_in.reply_tokens.add("rt-2")
    stand_in.fail_next("/v2/bot/message/reply", scripted)
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), outbound(reply_token="rt-2"))
    assert (failed.value.code, failed.value.retryable) == ("outcome_unknown", False)
    assert stand_in.calls("/v2/bot/message/push") == []


@pytest.mark.parametrize(
    ("scripted", "retryable", "retry_after"),
    [
        (Scripted(500, {"message": "An error occurred"}), True, None),
        (Scripted(429, {"message": "The API rate limit has been exceeded."}, {"Retry-After": "3"}), True, 3.0),
        (Scripted(429, {"message": "You have reached your monthly limit."}), False, None),
        (Scripted(403, {"message": "Not authorized to use this API"}), False, None),
    ],
)
async def test_push_failures_are_classified(
    line_api: tuple[LineStandIn, str], tmp_path: Path, scripted: Scripted, retryable: bool, retry_after: float | None
) -> None:
    stand_in, url = line_api
    adapter = adapter_for(url, tmp_path)
    stand_in.fail_next("/v2/bot/message/push", scripted)
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), outbound())
    assert failed.value.code == str(scripted.status)
    assert (failed.value.retryable, failed.value.retry_after) == (retryable, retry_after)
    assert failed.value.message == scripted.body["message"]


async def test_push_4xx_keeps_lines_details(line_api: tuple[LineStandIn, str], tmp_path: Path) -> None:
    _, url = line_api
    adapter = adapter_for(url, tmp_path)
    async with httpx.AsyncClient(timeout=5) as http:
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account({"channel_access_token": "revoked"}), outbound())
        assert (failed.value.code, failed.value.retryable) == ("401", False)
        with pytest.raises(SendFailed) as failed:
            await adapter.send(http, account(), outbound(recipient=Address("line", "")))
    assert failed.value.code == "400"
    assert "to: May not be empty" in failed.value.message


async def test_find_sent_lets_a_push_go_again_but_cannot_tell_a_reply(tmp_path: Path) -> None:
    adapter = adapter_for("http://127.0.0.1:9", tmp_path)
    async with httpx.AsyncClient(timeout=5) as http:
        assert await adapter.find_sent(http, account(), outbound(), since_us=0) is None
        with pytest.raises(CannotTell):
            await adapter.find_sent(http, account(), outbound(reply_token="rt"), since_us=0)


def test_message_objects_follow_lines_limits() -> None:
    image = {"type": "image", "url": "https://cdn.example/a.jpg", "mime_type": "image/jpeg", "filename": "", "size": 0}
    pdf = {
        "type": "file",
        "url": "https://cdn.example/a.pdf",
        "mime_type": "application/pdf",
        "filename": "a.pdf",
        "size": 0,
    }
    plain_http = {**image, "url": "http://cdn.example/b.jpg"}
    messages = line_messages(outbound(text="see", medias=[image, pdf, plain_http]))
    assert messages == [
        {"type": "text", "text": "see\na.pdf: https://cdn.example/a.pdf\nimage: http://cdn.example/b.jpg"},
        {
            "type": "image",
            "originalContentUrl": "https://cdn.example/a.jpg",
            "previewImageUrl": "https://cdn.example/a.jpg",
        },
    ]
    long = line_messages(outbound(text="x" * 12_000))
    assert [len(m["text"]) for m in long] == [5000, 5000, 2000]
    with pytest.raises(SendFailed) as failed:
        line_messages(outbound(text="y" * 26_000))
    assert (failed.value.code, failed.value.retryable) == ("too_many_parts", False)


# --- hooks --------------------------------------------------------------------


def _event_id() -> str:
    return "01" + uuid.uuid4().hex[:24].upper()


def plain_event(kind: str, **fields: Any) -> dict[str, Any]:
    """A non-message event (follow, unfollow, postback) from USER."""
    return {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": USER},
        "webhookEventId": _event_id(),
        "deliveryContext": {"isRedelivery": False},
        **fields,
    }


def message_event(
    message: dict[str, Any],
    *,
    user: str = USER,
    event_id: str = "",
    reply_token: str = "",
    redelivery: bool = False,
    source: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "type": "message",
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": source or {"type": "user", "userId": user},
        "webhookEventId": event_id or _event_id(),
        "deliveryContext": {"isRedelivery": redelivery},
        "replyToken": reply_token or uuid.uuid4().hex,
        "message": {"quoteToken": "q" + uuid.uuid4().hex, **message},
    }


def text_event(text: str, **kwargs: Any) -> dict[str, Any]:
    return message_event({"type": "text", "id": str(int(time.time_ns())), "text": text}, **kwargs)


def signed(events: list[dict[str, Any]], secret: str = SECRET, *, check: bool = True) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"destination": BOT, "events": events}).encode()
    signature = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    if check:  # LINE's own SDK accepts the signature and reads the events as what they claim to be
        parsed = WebhookParser(secret).parse(body.decode(), signature)
        kinds = {"message": MessageEvent, "follow": FollowEvent, "unfollow": UnfollowEvent}
        assert [type(e) for e in parsed] == [kinds[e["type"]] for e in events]
    return body, {"x-line-signature": signature, "content-type": "application/json"}


@pytest.fixture
async def hooks(
    hook_db: Database, tmp_path: Path, line_api: tuple[LineStandIn, str]
) -> AsyncIterator[tuple[HookHarness, LineStandIn, str]]:
    stand_in, url = line_api
    stand_in.profiles[USER] = "Alice Tanaka"

    def make(media: MediaFiles) -> LineAdapter:
        return LineAdapter(url, url, media)

    async with hook_harness(hook_db, tmp_path, make, max_item_bytes=4096) as (harness, _):
        account_id = harness.add_account(
            "line", {"channel_secret": SECRET, "channel_access_token": TOKEN}, Address("line", BOT)
        )
        yield harness, stand_in, account_id


async def post(harness: HookHarness, account_id: str, signed_body: tuple[bytes, dict[str, str]]) -> httpx.Response:
    body, headers = signed_body
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{harness.base_url}/v1.0/hooks/line/{account_id}", content=body, headers=headers)


def media_files(harness: HookHarness) -> list[str]:
    root = harness.media.root
    return sorted(p.name for p in root.rglob("*.bin")) if root.exists() else []


async def test_text_message_opens_a_room_named_from_the_profile(
    hooks: tuple[HookHarness, LineStandIn, str],
) -> None:
    harness, stand_in, account_id = hooks
    response = await post(harness, account_id, signed([text_event("Hi!", reply_token="rt-a")]))
    assert response.status_code == 200, response.text
    response = await post(harness, account_id, signed([text_event("Still there?", reply_token="rt-b")]))
    assert response.status_code == 200, response.text
    (room,) = harness.conversations()
    assert (room.type, room.self_target, room.peer_target, room.peer_name) == ("line", BOT, USER, "Alice Tanaka")
    first, second = harness.messages()
    assert (first.text, first.source_name, first.reply_token) == ("Hi!", "Alice Tanaka", "rt-a")
    assert second.reply_token == "rt-b"
    assert len(stand_in.calls("/v2/bot/profile/")) == 1, "the profile is fetched once per person"
    assert harness.event_types().count("conversation_message_created") == 2
    assert harness.event_types()[:2] == ["account_created", "conversation_created"]


async def test_media_content_is_fetched_kept_and_served_to_the_customer_only(
    hooks: tuple[HookHarness, LineStandIn, str],
) -> None:
    harness, stand_in, account_id = hooks
    picture = os.urandom(3000)
    stand_in.contents["4001"] = (picture, "image/jpeg")
    stand_in.contents["4003"] = (b"voice", "audio/m4a")
    stand_in.contents["4004"] = (b"%PDF-1.7 ...", "application/pdf")
    events = [
        message_event({"type": "image", "id": "4001", "contentProvider": {"type": "line"}}),
        message_event(
            {
                "type": "video",
                "id": "4002",
                "duration": 6000,
                "contentProvider": {
                    "type": "external",
                    "originalContentUrl": "https://cdn.example/v.mp4",
                    "previewImageUrl": "https://cdn.example/v.jpg",
                },
            }
        ),
        message_event({"type": "audio", "id": "4003", "duration": 2000, "contentProvider": {"type": "line"}}),
        message_event({"type": "file", "id": "4004", "fileName": "invoice.pdf", "fileSize": 12}),
    ]
    response = await post(harness, account_id, signed(events))
    assert response.status_code == 200, response.text
    by_type = {m.medias[0]["type"]: m.medias[0] for m in harness.messages()}
    assert by_type["video"]["url"] == "https://cdn.example/v.mp4"
    assert by_type["file"]["filename"] == "invoice.pdf"
    assert by_type["audio"]["mime_type"] == "audio/m4a"
    assert sorted(c[1] for c in stand_in.calls("/v2/bot/message/")) == [
        "/v2/bot/message/4001/content",
        "/v2/bot/message/4003/content",
        "/v2/bot/message/4004/content",
    ]
    image = by_type["image"]
    assert image["url"].startswith(f"{harness.base_url}/v1.0/media/") and image["size"] == len(picture)
    async with httpx.AsyncClient(timeout=10) as http:
        got = await http.get(image["url"], headers={"authorization": f"Bearer {harness.token}"})
        assert got.status_code == 200
        assert (got.content, got.headers["content-type"]) == (picture, "image/jpeg")
        assert (await http.get(image["url"] + f"?token={harness.token}")).status_code == 200
        assert (await http.get(image["url"])).status_code == 401
        ambiguous = await http.get(image["url"] + "?token=other", headers={"authorization": f"Bearer {harness.token}"})
        assert ambiguous.status_code == 400
        stranger = create_token(harness.db.writer, create_customer(harness.db.writer, "stranger")).token
        assert (await http.get(image["url"], headers={"authorization": f"Bearer {stranger}"})).status_code == 404
        pdf = await http.get(by_type["file"]["url"], headers={"authorization": f"Bearer {harness.token}"})
        assert pdf.headers["content-disposition"].startswith("attachment")
        assert pdf.headers["x-content-type-options"] == "nosniff"


async def test_content_line_will_not_give_or_too_large_keeps_the_message(
    hooks: tuple[HookHarness, LineStandIn, str],
) -> None:
    harness, stand_in, account_id = hooks
    stand_in.contents["5002"] = (os.urandom(5000), "image/png")  # over the harness's 4096-byte item bound
    events = [
        message_event({"type": "image", "id": "5001", "contentProvider": {"type": "line"}}),  # LINE answers 404
        message_event({"type": "image", "id": "5002", "contentProvider": {"type": "line"}}),
    ]
    response = await post(harness, account_id, signed(events))
    assert response.status_code == 200, response.text
    assert [(m.medias[0]["type"], m.medias[0]["url"]) for m in harness.messages()] == [("image", ""), ("image", "")]
    assert media_files(harness) == []


async def test_sticker_location_follow_and_unfollow_are_rendered_as_text(
    hooks: tuple[HookHarness, LineStandIn, str],
) -> None:
    harness, _, account_id = hooks
    events = [
        plain_event("follow", replyToken="rt-f", follow={"isUnblocked": False}),
        message_event(
            {
                "type": "sticker",
                "id": "6001",
                "packageId": "446",
                "stickerId": "1988",
                "stickerResourceType": "STATIC",
                "keywords": ["happy", "smile", "joy", "extra"],
            }
        ),
        message_event(
            {
                "type": "location",
                "id": "6002",
                "title": "Shibuya",
                "address": "Tokyo, Japan",
                "latitude": 35.6591,
                "longitude": 139.7037,
            }
        ),
        plain_event("unfollow"),
    ]
    response = await post(harness, account_id, signed(events))
    assert response.status_code == 200, response.text
    texts = {m.text: m for m in harness.messages()}
    assert set(texts) == {
        "[followed]",
        "[sticker] happy, smile, joy",
        "[location] Shibuya, Tokyo, Japan (35.6591, 139.7037)",
        "[unfollowed]",
    }
    sticker = texts["[sticker] happy, smile, joy"].medias[0]
    assert (sticker["type"], sticker["url"]) == (
        "sticker",
        "https://stickershop.line-scdn.net/stickershop/v1/sticker/1988/android/sticker.png",
    )
    location = texts["[location] Shibuya, Tokyo, Japan (35.6591, 139.7037)"].medias[0]
    assert (location["type"], location["url"]) == ("location", "geo:35.6591,139.7037")
    assert texts["[followed]"].reply_token == "rt-f"
    assert len(harness.conversations()) == 1


async def test_redelivered_events_answer_200_and_store_nothing_new(
    hooks: tuple[HookHarness, LineStandIn, str],
) -> None:
    harness, stand_in, account_id = hooks
    stand_in.contents["7001"] = (b"jpeg bytes", "image/jpeg")
    image = message_event({"type": "image", "id": "7001", "contentProvider": {"type": "line"}})
    follow = plain_event("follow", replyToken="r", follow={"isUnblocked": False})
    assert (await post(harness, account_id, signed([image, follow]))).status_code == 200
    stored = media_files(harness)
    again = [
        {**image, "deliveryContext": {"isRedelivery": True}},
        {**follow, "deliveryContext": {"isRedelivery": True}},
    ]
    for _ in range(2):
        response = await post(harness, account_id, signed(again))
        assert response.status_code == 200, response.text
    assert len(harness.messages()) == 2
    assert harness.event_types().count("conversation_message_created") == 2
    assert media_files(harness) == stored, "a redelivery leaves no second copy of the content behind"


@pytest.mark.parametrize("case", ["forged", "other_secret", "missing", "tampered"])
async def test_bad_signature_answers_401_and_stores_nothing(
    hooks: tuple[HookHarness, LineStandIn, str], case: str
) -> None:
    harness, stand_in, account_id = hooks
    stand_in.contents["8001"] = (b"x", "image/png")
    body, headers = signed([message_event({"type": "image", "id": "8001", "contentProvider": {"type": "line"}})])
    if case == "forged":
        headers["x-line-signature"] = base64.b64encode(b"\0" * 32).decode()
    elif case == "other_secret":
        body, headers = signed([text_event("hi")], secret="f" * 32)
    elif case == "missing":
        del headers["x-line-signature"]
    elif case == "tampered":
        body = body.replace(b"8001", b"8002")
    response = await post(harness, account_id, (body, headers))
    assert response.status_code == 401, response.text
    assert harness.messages() == []
    assert stand_in.calls("/v2/bot/") == [], "nothing is fetched for an unverified body"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda events: events[1]["message"].pop("id"), "events[1].message.id"),
        (lambda events: events[1].pop("webhookEventId"), "events[1].webhookEventId"),
        (lambda events: events[1]["source"].__setitem__("userId", "has spaces"), "events[1].source.userId"),
        (lambda events: events[1]["message"].__setitem__("type", "hologram"), "events[1].message.type"),
        (lambda events: events[1]["message"].__setitem__("text", 42), "events[1].message.text"),
    ],
)
async def test_malformed_event_answers_400_naming_it_and_stores_nothing(
    hooks: tuple[HookHarness, LineStandIn, str], mutate: Any, field: str
) -> None:
    harness, _, account_id = hooks
    events = [text_event("fine"), text_event("broken")]
    mutate(events)
    response = await post(harness, account_id, signed(events, check=False))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][-1]["field_violations"][0]["field"] == field
    assert harness.messages() == [], "the valid event before it is not stored either"


async def test_verify_request_other_events_and_groups(hooks: tuple[HookHarness, LineStandIn, str]) -> None:
    harness, _, account_id = hooks
    assert (await post(harness, account_id, signed([]))).status_code == 200  # the console's "Verify"
    group = "C" + "a" * 32
    events = [
        text_event("hello group", source={"type": "group", "groupId": group, "userId": OTHER_USER}),
    ]
    body, headers = signed(events)
    postback = plain_event("postback", replyToken="r", postback={"data": "action=buy"})
    body = body.replace(b'"events": [', b'"events": [' + json.dumps(postback).encode() + b", ")
    headers["x-line-signature"] = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert (await post(harness, account_id, (body, headers))).status_code == 200
    (message,) = harness.messages()
    assert (message.source_target, message.text) == (group, "hello group")


async def test_unknown_or_deleted_account_answers_404(hooks: tuple[HookHarness, LineStandIn, str]) -> None:
    harness, _, account_id = hooks
    assert (await post(harness, str(uuid.uuid4()), signed([text_event("hi")]))).status_code == 404
    harness.delete_account(account_id)
    assert (await post(harness, account_id, signed([text_event("hi")]))).status_code == 404
    assert harness.messages() == []


async def test_served_app_answers_media_downloads_with_the_api_token(hub: Hub, tenant: Tenant) -> None:
    """`convhub serve` mounts GET /v1.0/media/{id}: 401 without a token, 404 for an id it does not keep."""
    assert hub.http_base is not None
    url = f"{hub.http_base}/v1.0/media/{uuid.uuid4()}"
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(url)).status_code == 401
        missing = await http.get(url, headers={"authorization": f"Bearer {tenant.token}"})
        assert missing.status_code == 404
        assert missing.json()["error"]["status"] == "NOT_FOUND"


async def test_newest_reply_token_is_found_within_its_window(hooks: tuple[HookHarness, LineStandIn, str]) -> None:
    harness, _, account_id = hooks
    for token in ("rt-old", "rt-new"):
        assert (await post(harness, account_id, signed([text_event(token, reply_token=token)]))).status_code == 200
    first, second = harness.messages()
    with harness.db.read() as conn:
        now = time.time_ns() // 1000
        assert messages_store.reply_token(conn, first.conversation_id, USER, now - 60_000_000, now) == "rt-new"
        assert messages_store.reply_token(conn, first.conversation_id, USER, 0, first.tm_create) == "rt-old"
        assert messages_store.reply_token(conn, first.conversation_id, USER, second.tm_create + 1, now) is None
        assert messages_store.reply_token(conn, first.conversation_id, OTHER_USER, 0, now) is None
