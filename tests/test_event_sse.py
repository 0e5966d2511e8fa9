"""REST event endpoints over real HTTP: GET /v1.0/events, and /v1.0/events:subscribe as SSE and NDJSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import Hub, Tenant
from tests.support import Api


@pytest.fixture
async def rest(hub: Hub, tenant: Tenant) -> AsyncIterator[httpx.AsyncClient]:
    assert hub.http_base is not None
    headers = {"Authorization": f"Bearer {tenant.token}"}
    async with httpx.AsyncClient(base_url=hub.http_base, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def api(channel: Any, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


async def sse_frames(lines: AsyncIterator[str], count: int) -> list[dict[str, str]]:
    """The next `count` event frames (comments skipped) as {field: value} dicts."""
    frames: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if fields:
                frames.append(fields)
                fields = {}
                if len(frames) == count:
                    return frames
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
    raise AssertionError(f"stream ended after {len(frames)} frames")


async def test_list_events_over_rest_uses_voipbin_shapes(rest: httpx.AsyncClient, api: Api) -> None:
    api.sms(text="over rest")
    r = await rest.get("/v1.0/events", params={"event_types": "conversation_message_received"})
    assert r.status_code == 200
    body = r.json()
    assert body["next_page_token"] == ""
    [event] = body["result"]
    assert event["type"] == "conversation_message_received"
    assert event["sequence"] == "4"  # int64 travels as a string (proto3 JSON)
    assert event["message"]["text"] == "over rest"
    assert event["message"]["direction"] == "incoming"
    r = await rest.get("/v1.0/events", params={"event_types": "no_such_type"})
    assert r.status_code == 400
    assert r.json()["error"]["details"][-1]["field_violations"][0]["field"] == "event_types"


async def test_sse_frames_carry_id_and_event_type_and_last_event_id_resumes(rest: httpx.AsyncClient, api: Api) -> None:
    api.sms(peer="+15550006001", text="one")
    api.sms(peer="+15550006001", text="two")  # sequences 1..6
    headers = {"Accept": "text/event-stream"}
    async with rest.stream("GET", "/v1.0/events:subscribe", params={"after_sequence": 0}, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        frames = await sse_frames(r.aiter_lines(), 6)
    assert [f["id"] for f in frames] == ["1", "2", "3", "4", "5", "6"]
    assert [f["event"] for f in frames] == [
        "conversation_created",
        "participant_added",
        "conversation_message_created",
        "conversation_message_received",
        "conversation_message_created",
        "conversation_message_received",
    ]
    data = [json.loads(f["data"])["result"] for f in frames]
    assert [d["sequence"] for d in data] == ["1", "2", "3", "4", "5", "6"]
    assert data[3]["message"]["text"] == "one"

    # EventSource reconnects to the same URL with Last-Event-ID: the header wins over the query
    resume = {**headers, "Last-Event-ID": "4"}
    async with rest.stream("GET", "/v1.0/events:subscribe", params={"after_sequence": 0}, headers=resume) as r:
        assert r.status_code == 200
        lines = r.aiter_lines()
        frames = await sse_frames(lines, 2)
        api.sms(peer="+15550006001", text="three")  # and then it continues live
        live = await sse_frames(lines, 2)
    assert [f["id"] for f in [*frames, *live]] == ["5", "6", "7", "8"]
    assert json.loads(live[1]["data"])["result"]["message"]["text"] == "three"

    bad = {**headers, "Last-Event-ID": "abc"}
    r = await rest.get("/v1.0/events:subscribe", headers=bad)
    assert r.status_code == 400
    assert r.json()["error"]["details"][-1]["field_violations"][0]["field"] == "Last-Event-ID"


async def test_ndjson_subscription_streams_results_live(rest: httpx.AsyncClient, api: Api) -> None:
    api.sms(peer="+15550007001", text="first")
    async with rest.stream(
        "GET", "/v1.0/events:subscribe", params={"event_types": "conversation_message_received"}
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/x-ndjson"
        lines = r.aiter_lines()
        api.sms(peer="+15550007001", text="second")  # the stream started live: only this one
        event = json.loads(await anext(lines))["result"]
    assert (event["type"], event["message"]["text"]) == ("conversation_message_received", "second")
