"""Inbound MMS media fetched into the media store (channels/media_fetch.py): Telnyx links and Twilio's size bound,
through the real hook routes (tests/hook_harness.py) on SQLite and PostgreSQL.

The media host is the Twilio stand-in's CDN (tests/twilio_standin.py): plain
signed-link GETs that refuse an `Authorization` header, like Telnyx's S3 links.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_channel_telnyx import API_KEY, OUR_NUMBER, Signer, post, received
from twilio.request_validator import RequestValidator

from convhub.server.channels.telnyx import TelnyxAdapter
from convhub.server.channels.twilio import TwilioAdapter
from convhub.server.domain.addresses import Address
from convhub.server.store.db import Database
from tests.hook_harness import HookHarness, hook_db, hook_harness  # noqa: F401 (hook_db is a fixture)
from tests.twilio_standin import TwilioStandIn

MAX_ITEM = 64  # bytes one media item may have here


@pytest.fixture(scope="module")
def cdn() -> Iterator[TwilioStandIn]:
    server = TwilioStandIn().start()
    yield server
    server.stop()


def link(cdn: TwilioStandIn, data: bytes, content_type: str) -> str:
    """A signed-link style URL (no auth needed) serving `data`."""
    api_url = cdn.add_media(cdn.new_account()[0], data, content_type)
    return f"{cdn.url.replace('127.0.0.1', 'localhost')}/cdn/{api_url.rsplit('/', 1)[1]}?X-Amz-Signature=abc"


def stored_files(harness: HookHarness) -> list[Path]:
    return sorted(harness.media.root.glob("*/*.bin"))


@pytest.fixture
async def telnyx(hook_db: Database, tmp_path: Path) -> AsyncIterator[tuple[HookHarness, Signer, str]]:  # noqa: F811
    factory = lambda media: TelnyxAdapter("http://127.0.0.1:9", media)  # noqa: E731
    async with hook_harness(hook_db, tmp_path, factory, max_item_bytes=MAX_ITEM) as (harness, _):
        signer = Signer()
        account_id = harness.add_account(
            "telnyx", {"api_key": API_KEY, "public_key": signer.public_key}, Address("tel", OUR_NUMBER)
        )
        yield harness, signer, account_id


async def test_telnyx_media_is_kept_and_an_oversize_item_keeps_its_link(
    telnyx: tuple[HookHarness, Signer, str], cdn: TwilioStandIn
) -> None:
    harness, signer, account_id = telnyx
    small, big = link(cdn, b"tiny jpeg", "image/jpeg"), link(cdn, b"x" * (MAX_ITEM + 1), "video/mp4")
    media = [
        {"url": small, "content_type": "image/jpeg", "size": 9},
        {"url": big, "content_type": "video/mp4", "size": MAX_ITEM + 1},
    ]
    body = received("tx-media", text="", media=media)
    assert (await post(harness, account_id, body, signer.headers(body))).status_code == 200
    (message,) = harness.messages()
    kept, linked = message.medias
    assert kept["url"].startswith(f"{harness.base_url}/v1.0/media/")
    assert (kept["type"], kept["mime_type"], kept["size"]) == ("image", "image/jpeg", 9)
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {harness.token}"}, timeout=10) as http:
        got = await http.get(kept["url"])
    assert got.status_code == 200 and got.content == b"tiny jpeg"
    assert (linked["url"], linked["mime_type"]) == (big, "video/mp4")
    assert message.error_code == "media_not_fetched"
    assert message.error_message == f"data.payload.media[1].url: larger than {MAX_ITEM} bytes"
    assert len(stored_files(harness)) == 1


async def test_a_redelivered_telnyx_mms_leaves_one_file(
    telnyx: tuple[HookHarness, Signer, str], cdn: TwilioStandIn
) -> None:
    harness, signer, account_id = telnyx
    body = received("tx-twice", media=[{"url": link(cdn, b"once", "image/png"), "content_type": "image/png"}])
    for _ in range(3):
        assert (await post(harness, account_id, body, signer.headers(body))).status_code == 200
    (message,) = harness.messages()
    assert len(stored_files(harness)) == 1  # the redeliveries' copies were removed
    assert stored_files(harness)[0].stem == message.medias[0]["url"].rsplit("/", 1)[1]


@pytest.fixture
async def twilio(hook_db: Database, tmp_path: Path, cdn: TwilioStandIn) -> AsyncIterator[tuple[HookHarness, Any]]:  # noqa: F811
    factory = lambda media: TwilioAdapter(cdn.url, media)  # noqa: E731
    async with hook_harness(hook_db, tmp_path, factory, max_item_bytes=MAX_ITEM) as (harness, _):
        sid, token = cdn.new_account()
        account_id = harness.add_account(
            "twilio", {"account_sid": sid, "auth_token": token}, Address("tel", OUR_NUMBER)
        )
        yield harness, (account_id, sid, token)


async def test_twilio_media_past_the_bound_keeps_the_message(
    twilio: tuple[HookHarness, Any], cdn: TwilioStandIn
) -> None:
    harness, (account_id, sid, token) = twilio
    path = f"/v1.0/hooks/twilio/{account_id}"
    params = {
        "MessageSid": "SM" + "e" * 32,
        "From": "+15550001234",
        "To": OUR_NUMBER,
        "Body": "big one",
        "NumMedia": "1",
        "MediaUrl0": cdn.add_media(sid, b"y" * (MAX_ITEM + 1), "image/jpeg"),
        "MediaContentType0": "image/jpeg",
    }
    signature = RequestValidator(token).compute_signature(harness.base_url + path, params)
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(harness.base_url + path, data=params, headers={"X-Twilio-Signature": signature})
    assert r.status_code == 200, r.text
    (message,) = harness.messages()
    assert message.text == "big one" and message.medias[0]["url"] == params["MediaUrl0"]
    assert (message.error_code, message.error_message) == (
        "media_not_fetched",
        f"MediaUrl0: larger than {MAX_ITEM} bytes",
    )
    assert stored_files(harness) == []
