"""VoIPBIN parity, issue 12 item 10: hand-built timestamp page tokens on the list routes.

Schema facts (as test data) from VoIPBIN's code: its list queries are
`tm_create < <page_token> ORDER BY tm_create DESC`; clients build the first
token from the current time in `utilhandler.ISO8601Layout`
(`2006-01-02T15:04:05.000000Z`), and its parser also reads the layout without
`Z` and the legacy `2006-01-02 15:04:05.000000`. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from test_gateway_voipbin import ingest
from test_voipbin_parity import check_error, violated_field

VOIPBIN_LAYOUT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def voipbin_now(shift: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + shift).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def created(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["tm_create"].replace("Z", "+00:00"))


def walk(rest: httpx.Client, path: str, token: str, **params: Any) -> list[dict[str, Any]]:
    """Every item from `token` on, following next_page_token; each token must be in VoIPBIN's layout."""
    items: list[dict[str, Any]] = []
    for _ in range(20):
        r = rest.get(path, params={"page_size": 2, "page_token": token, **params})
        assert r.status_code == 200, r.text
        body = r.json()
        items.extend(body["result"])
        token = body["next_page_token"]
        if not token:
            return items
        assert VOIPBIN_LAYOUT.fullmatch(token), token
    raise AssertionError("more pages than items")


def test_conversations_before_a_voipbin_time_newest_first(rest: httpx.Client) -> None:
    ids = [ingest(rest)["conversation"]["id"] for _ in range(5)]
    items = walk(rest, "/v1.0/conversations", voipbin_now(timedelta(seconds=5)))
    assert [c["id"] for c in items] == ids[::-1]  # every one once, newest first
    times = [created(c) for c in items]
    middle = times[2]
    older = walk(rest, "/v1.0/conversations", middle.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert [c["id"] for c in older] == ids[:2][::-1]  # strictly before, as VoIPBIN's `tm_create <`
    filtered = walk(rest, "/v1.0/conversations", voipbin_now(timedelta(seconds=5)), state="open")
    assert [c["id"] for c in filtered] == ids[::-1]  # the filtered query honours it too


@pytest.mark.parametrize(
    "layout",
    [
        "%Y-%m-%dT%H:%M:%S.%fZ",  # ISO8601Layout
        "%Y-%m-%dT%H:%M:%S.%f",  # ISO8601LayoutNoZ
        "%Y-%m-%d %H:%M:%S.%f",  # the legacy layout
        "%Y-%m-%dT%H:%M:%S+00:00",  # RFC 3339
    ],
)
def test_every_layout_voipbin_reads_is_accepted(rest: httpx.Client, layout: str) -> None:
    conversation_id = ingest(rest)["conversation"]["id"]
    later = (datetime.now(UTC) + timedelta(seconds=5)).strftime(layout)
    assert [c["id"] for c in walk(rest, "/v1.0/conversations", later)] == [conversation_id]
    earlier = (datetime.now(UTC) - timedelta(hours=1)).strftime(layout)
    assert walk(rest, "/v1.0/conversations", earlier) == []


def test_an_offset_is_honoured(rest: httpx.Client) -> None:
    conversation_id = ingest(rest)["conversation"]["id"]
    tokyo = timezone(timedelta(hours=9))
    later = (datetime.now(tokyo) + timedelta(seconds=5)).isoformat()
    assert [c["id"] for c in walk(rest, "/v1.0/conversations", later)] == [conversation_id]
    earlier = (datetime.now(tokyo) - timedelta(minutes=5)).isoformat()
    assert walk(rest, "/v1.0/conversations", earlier) == []


def test_messages_and_accounts_take_them_too(rest: httpx.Client) -> None:
    peer = "+1555" + str(uuid.uuid4().int)[:7]
    first = ingest(rest, peer)
    conversation_id = first["conversation"]["id"]
    message_ids = [first["message"]["id"], *(ingest(rest, peer)["message"]["id"] for _ in range(2))]
    path = f"/v1.0/conversations/{conversation_id}/messages"
    assert [m["id"] for m in walk(rest, path, voipbin_now(timedelta(seconds=5)))] == message_ids[::-1]
    account_ids = []
    for n in range(3):
        r = rest.post("/v1.0/conversation_accounts", json={"type": "line", "name": f"line {n}"})
        assert r.status_code == 200, r.text
        account_ids.append(r.json()["id"])
    listed = walk(rest, "/v1.0/conversation_accounts", voipbin_now(timedelta(seconds=5)))
    assert [a["id"] for a in listed] == account_ids[::-1]


def test_opaque_tokens_still_work_and_bad_times_are_400(rest: httpx.Client) -> None:
    ids = [ingest(rest)["conversation"]["id"] for _ in range(3)]
    r = rest.get("/v1.0/conversations", params={"page_size": 2})
    opaque = r.json()["next_page_token"]
    assert not VOIPBIN_LAYOUT.fullmatch(opaque)
    rest_page = rest.get("/v1.0/conversations", params={"page_size": 2, "page_token": opaque}).json()
    assert [c["id"] for c in r.json()["result"] + rest_page["result"]] == ids  # oldest first, as before
    for bad in ("2024-13-02T03:04:05.000000Z", "2024-02-30 03:04:05.000000", "yesterday"):
        err = check_error(rest.get("/v1.0/conversations", params={"page_token": bad}), 400, "INVALID_ARGUMENT")
        assert violated_field(err) == "page_token", bad


def test_voipbins_filter_body_on_the_list_get_is_read_not_ignored(rest: httpx.Client) -> None:
    """openapi/paths/conversations/main.yaml: GET /v1.0/conversations takes filters in a JSON body."""
    sms = ingest(rest)["conversation"]["id"]
    line_body = {
        "channel": "line",
        "self": {"type": "line", "target": "U" + uuid.uuid4().hex},
        "peer": {"type": "line", "target": "U" + uuid.uuid4().hex},
        "text": "hi",
    }
    r = rest.post("/v1.0/conversation_messages:ingest", json=line_body)
    assert r.status_code == 200, r.text
    line = r.json()["conversation"]["id"]

    def listed(body: Any) -> httpx.Response:
        return rest.request("GET", "/v1.0/conversations", json=body)

    assert [c["id"] for c in listed({"type": "line"}).json()["result"]] == [line]
    example = {"customer_id": "64a3cbd8-e863-11ec-85de-1bcd09d3872e", "deleted": False}  # VoIPBIN's example
    assert [c["id"] for c in listed(example).json()["result"]] == [sms, line]  # the token's customer decides
    both = rest.request("GET", "/v1.0/conversations", params={"page_size": 1}, json={"type": "message"})
    assert [c["id"] for c in both.json()["result"]] == [sms]
    line_peer = line_body["peer"]["target"]  # type: ignore[index]
    assert [c["id"] for c in listed({"dialog_id": line_peer}).json()["result"]] == [line]
    assert listed({"dialog_id": "chatroom-abc123"}).json()["result"] == []
    assert listed({"account_id": str(uuid.uuid4())}).json()["result"] == []
    assert len(listed({"account_id": "00000000-0000-0000-0000-000000000000"}).json()["result"]) == 2  # "none"
    for body, field in (
        ({"deleted": True}, "deleted"),
        ({"account_id": "not-a-uuid"}, "account_id"),
        ({"dialog_id": 7}, "dialog_id"),
        ({"typo": "line"}, "typo"),
        ({"type": "fax"}, "type"),
        ([], "body"),
    ):
        err = check_error(listed(body), 400, "INVALID_ARGUMENT")
        assert violated_field(err) == field, (body, err)
    err = check_error(
        rest.request("GET", "/v1.0/conversations", params={"type": "line"}, json={"type": "line"}),
        400,
        "INVALID_ARGUMENT",
    )
    assert violated_field(err) == "type"  # given twice


def test_account_id_query_parameter_filters(rest: httpx.Client) -> None:
    r = rest.post("/v1.0/conversation_accounts", json={"type": "sms", "name": "sms"})
    assert r.status_code == 200, r.text
    account_id = r.json()["id"]
    ingest(rest)  # no account
    peer = "+1555" + str(uuid.uuid4().int)[:7]
    body = {
        "account_id": account_id,
        "self": {"type": "tel", "target": "+15559990000"},
        "peer": {"type": "tel", "target": peer},
        "text": "via the account",
    }
    r = rest.post("/v1.0/conversation_messages:ingest", json=body)
    assert r.status_code == 200, r.text
    mine = r.json()["conversation"]["id"]
    assert [c["id"] for c in rest.get("/v1.0/conversations", params={"account_id": account_id}).json()["result"]] == [
        mine
    ]
    err = check_error(rest.get("/v1.0/conversations", params={"account_id": "x"}), 400, "INVALID_ARGUMENT")
    assert violated_field(err) == "account_id"
