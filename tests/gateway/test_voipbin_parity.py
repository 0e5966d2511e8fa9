"""VoIPBIN parity: VoIPBIN's own request bodies against the real `convhub serve`, responses checked field by field.

The schema facts below are copied by hand from VoIPBIN's published OpenAPI
document (`bin-openapi-manager/openapi/openapi.yaml`) and its Go structs
(`bin-conversation-manager/models`, `bin-api-manager/lib/apierror`), as test
data: which keys a response carries and the values an enum takes. Runs on
SQLite and PostgreSQL (the `hub` fixture; `base` and `rest` are in conftest.py).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from test_gateway_voipbin import ingest

NIL_UUID = "00000000-0000-0000-0000-000000000000"

# ConversationManagerConversation: every key VoIPBIN's client reads.
CONVERSATION_KEYS = {
    "id": "uuid",
    "customer_id": "uuid",
    "owner_type": "string",
    "owner_id": "uuid",
    "account_id": "uuid",
    "name": "string",
    "detail": "string",
    "type": "enum",
    "self": "address",
    "peer": "address",
    "tm_create": "date-time",
    "tm_update": "date-time",
    "tm_delete": "date-time-or-null",
}
# CommonAddress (output side).
ADDRESS_KEYS = {"type", "target", "target_name"}
CONVERSATION_TYPES = {"", "message", "line", "whatsapp", "email"}
# lib/apierror/envelope.go: {"error": {"status", "reason", "message", "request_id", "details"?}}
ERROR_KEYS = {"status", "reason", "message", "request_id"}
# lib/middleware/request_id.go: a generated id is "req_" + 26 base32 characters.
GENERATED_REQUEST_ID = re.compile(r"req_[A-Z2-7]{26}")

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DATE_TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def open_conversation(rest: httpx.Client, peer: str | None = None) -> dict[str, Any]:
    conversation: dict[str, Any] = ingest(rest, peer)["conversation"]
    return conversation


def check_shape(obj: dict[str, Any], keys: dict[str, str]) -> None:
    """Every VoIPBIN key is present with a value of VoIPBIN's type."""
    for key, kind in keys.items():
        assert key in obj, key
        value = obj[key]
        if kind == "uuid":
            assert isinstance(value, str) and UUID_RE.fullmatch(value), (key, value)
        elif kind == "date-time":
            assert isinstance(value, str) and DATE_TIME_RE.fullmatch(value), (key, value)
        elif kind == "date-time-or-null":
            assert value is None or DATE_TIME_RE.fullmatch(value), (key, value)
        elif kind == "address":
            assert set(value) >= ADDRESS_KEYS, (key, value)
        elif kind == "enum":
            assert value in CONVERSATION_TYPES, (key, value)
        else:
            assert isinstance(value, str), (key, value)


def check_error(r: httpx.Response, http: int, status: str) -> dict[str, Any]:
    assert r.status_code == http, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) >= ERROR_KEYS
    assert err["status"] == status and err["reason"] and err["message"]
    assert err["request_id"] == r.headers["x-request-id"]
    return err


def violated_field(err: dict[str, Any]) -> str:
    """The field the BadRequest detail names."""
    bad_request = next(d for d in err["details"] if d["@type"].endswith("google.rpc.BadRequest"))
    field: str = bad_request["field_violations"][0]["field"]
    return field


def test_conversation_has_every_voipbin_field_with_nil_uuids_and_null_tm_delete(rest: httpx.Client) -> None:
    conv = open_conversation(rest)
    got = rest.get(f"/v1.0/conversations/{conv['id']}").json()
    check_shape(got, CONVERSATION_KEYS)
    assert got["account_id"] == NIL_UUID and got["owner_id"] == NIL_UUID
    assert got["tm_delete"] is None
    listed = rest.get("/v1.0/conversations").json()["result"]
    for item in listed:
        check_shape(item, CONVERSATION_KEYS)


def test_nil_owner_id_in_a_put_means_unassigned(rest: httpx.Client) -> None:
    conv = open_conversation(rest)
    owner = str(uuid.uuid4())
    r = rest.put(f"/v1.0/conversations/{conv['id']}", json={"owner_type": "agent", "owner_id": owner})
    assert r.status_code == 200 and r.json()["owner_id"] == owner
    r = rest.put(f"/v1.0/conversations/{conv['id']}", json={"owner_type": "", "owner_id": NIL_UUID})
    assert r.status_code == 200 and r.json()["owner_id"] == NIL_UUID


def test_error_envelope_is_voipbins_with_code_and_details_as_extras(rest: httpx.Client) -> None:
    err = check_error(rest.get(f"/v1.0/conversations/{uuid.uuid4()}"), 404, "NOT_FOUND")
    assert err["reason"] == "CONVERSATION_NOT_FOUND"
    assert err["code"] == 404 and isinstance(err["details"], list)
    assert GENERATED_REQUEST_ID.fullmatch(err["request_id"])
    err = check_error(rest.get("/v1.0/conversations", params={"page_size": -1}), 400, "INVALID_ARGUMENT")
    with httpx.Client(base_url=str(rest.base_url), timeout=10) as anon:
        err = check_error(anon.get("/v1.0/conversations"), 401, "UNAUTHENTICATED")
        check_error(anon.get("/v1.0/nothing_here"), 404, "NOT_FOUND")


def test_every_response_carries_a_request_id_and_a_safe_one_is_echoed(rest: httpx.Client, base: str) -> None:
    r = rest.get("/v1.0/conversations", headers={"X-Request-Id": "my-trace_42"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-trace_42"
    first, second = rest.get("/v1.0/conversations"), rest.get("/v1.0/conversations")
    assert GENERATED_REQUEST_ID.fullmatch(first.headers["x-request-id"])
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    for unsafe in ("has space", "x" * 65, "semi;colon"):
        got = rest.get("/v1.0/conversations", headers={"X-Request-Id": unsafe}).headers["x-request-id"]
        assert GENERATED_REQUEST_ID.fullmatch(got), unsafe  # never echoed into logs or headers
    with httpx.Client(base_url=base, timeout=10) as anon:
        for path in ("/healthz", "/v1.0/openapi.json"):
            assert GENERATED_REQUEST_ID.fullmatch(anon.get(path).headers["x-request-id"])


def test_access_key_every_way_voipbins_api_reads_one(base: str, tenant: Any) -> None:
    """bin-api-manager's getAuthString: cookie `token`, `?token=`, Bearer header, cookie `accesskey`, `?accesskey=`."""
    ways: list[dict[str, Any]] = [
        {"headers": {"Authorization": f"Bearer {tenant.token}"}},
        {"params": {"token": tenant.token}},
        {"params": {"accesskey": tenant.token}},
        {"headers": {"Cookie": f"token={tenant.token}"}},
        {"headers": {"Cookie": f"theme=dark; accesskey={tenant.token}"}},
    ]
    with httpx.Client(base_url=base, timeout=10) as anon:
        for way in ways:
            assert anon.get("/v1.0/conversations", **way).status_code == 200, way
        check_error(anon.get("/v1.0/conversations", headers={"Cookie": "token=nope"}), 401, "UNAUTHENTICATED")
        r = anon.get(
            "/v1.0/conversations", headers={"Cookie": "token=other", "Authorization": f"Bearer {tenant.token}"}
        )
        assert check_error(r, 400, "INVALID_ARGUMENT")["reason"] == "AMBIGUOUS_CREDENTIALS"


def test_unknown_query_parameter_is_400_naming_it(rest: httpx.Client) -> None:
    conv = open_conversation(rest)
    err = check_error(rest.get("/v1.0/conversations", params={"ownerid": "x"}), 400, "INVALID_ARGUMENT")
    assert "ownerid" in err["message"] and err["reason"] == "UNKNOWN_QUERY_PARAMETER"
    r = rest.get(f"/v1.0/conversations/{conv['id']}/messages", params={"page_size": 5, "sort": "asc"})
    assert "sort" in check_error(r, 400, "INVALID_ARGUMENT")["message"]


def test_list_filters_owner_tag_state_type_peer_and_updated_since(rest: httpx.Client) -> None:
    a, b, c = open_conversation(rest), open_conversation(rest), open_conversation(rest)
    owner = str(uuid.uuid4())
    for conv, body in (
        (a, {"owner_type": "agent", "owner_id": owner}),
        (b, {"tags": ["vip", "x"]}),
        (c, {"state": "closed"}),
    ):
        assert rest.put(f"/v1.0/conversations/{conv['id']}", json=body).status_code == 200

    def ids(**params: Any) -> list[str]:
        r = rest.get("/v1.0/conversations", params=params)
        assert r.status_code == 200, r.text
        return [item["id"] for item in r.json()["result"]]

    everything = ids()
    assert {a["id"], b["id"], c["id"]} <= set(everything)
    assert ids(owner_id=owner) == [a["id"]]
    assert ids(owner_id=NIL_UUID) == everything  # VoIPBIN: the nil UUID disables the filter
    assert ids(tag="vip") == [b["id"]] and ids(tag="vi") == []
    assert ids(state="closed") == [c["id"]]
    assert c["id"] not in ids(state="open") and a["id"] in ids(state="open")
    assert set(ids(type="message")) == set(everything) and ids(type="line") == []
    peer = a["peer"]["target"]
    national = "(" + peer[2:5] + ") " + peer[5:8] + "-" + peer[8:]  # normalised like the stored address
    assert ids(**{"peer.type": "tel", "peer.target": national}) == [a["id"]]
    assert ids(**{"peer.target": peer}) == [a["id"]]
    since = rest.get(f"/v1.0/conversations/{c['id']}").json()["tm_update"]
    assert ids(updated_since=since) == [c["id"]]
    assert ids(owner_id=owner, state="closed") == []


def test_filtered_pages_walk_every_match_and_tokens_stay_with_their_filter(rest: httpx.Client) -> None:
    made = [open_conversation(rest)["id"] for _ in range(5)]
    for conv_id in made[1:4]:
        assert rest.put(f"/v1.0/conversations/{conv_id}", json={"tags": ["walk"]}).status_code == 200
    seen: list[str] = []
    token = ""
    for _ in range(10):
        r = rest.get("/v1.0/conversations", params={"tag": "walk", "page_size": 2, "page_token": token})
        assert r.status_code == 200, r.text
        seen += [item["id"] for item in r.json()["result"]]
        token = r.json()["next_page_token"]
        if not token:
            break
        other = rest.get("/v1.0/conversations", params={"tag": "other", "page_token": token})
        assert violated_field(check_error(other, 400, "INVALID_ARGUMENT")) == "page_token"
    assert seen == made[1:4]


def test_bad_filters_are_400_naming_the_field(rest: httpx.Client) -> None:
    for params, field in (
        ({"state": "archived"}, "state"),
        ({"type": "pigeon"}, "type"),
        ({"peer.type": "tel", "peer.target": "not a number"}, "peer.target"),
        ({"updated_since": "yesterday"}, "updated_since"),
    ):
        err = check_error(rest.get("/v1.0/conversations", params=params), 400, "INVALID_ARGUMENT")
        assert violated_field(err) == field, (params, err)


def test_unassign_clears_the_owner(rest: httpx.Client) -> None:
    conv = open_conversation(rest)
    owner = str(uuid.uuid4())
    rest.put(f"/v1.0/conversations/{conv['id']}", json={"owner_type": "agent", "owner_id": owner, "name": "keep"})
    r = rest.post(f"/v1.0/conversations/{conv['id']}/unassign")  # VoIPBIN sends no body
    assert r.status_code == 200, r.text
    check_shape(r.json(), CONVERSATION_KEYS)
    assert (r.json()["owner_type"], r.json()["owner_id"], r.json()["name"]) == ("", NIL_UUID, "keep")
    assert rest.get(f"/v1.0/conversations/{conv['id']}").json()["owner_id"] == NIL_UUID
    check_error(rest.post(f"/v1.0/conversations/{uuid.uuid4()}/unassign"), 404, "NOT_FOUND")


# VoIPBIN's enum spellings convhub must accept and store (ConversationManager*Type, CommonAddress.type).
ACCOUNT_TYPES = ("line", "sms", "whatsapp")
ADDRESS_TYPES = {
    "tel": "+14155551234",
    "email": "ann@example.com",
    "line": "Uabc123",
    "whatsapp": "+14155551235",
    "sip": "sip:ann@example.com",
    "agent": str(uuid.uuid4()),
    "ai": str(uuid.uuid4()),
    "ai_team": str(uuid.uuid4()),
    "conference": str(uuid.uuid4()),
    "extension": str(uuid.uuid4()),
    "web_session": "ws-42",
}


def test_whatsapp_conversations_are_ingested_listed_and_filtered(rest: httpx.Client) -> None:
    body = {
        "channel": "whatsapp",
        "self": {"type": "whatsapp", "target": "+14155550000"},
        "peer": {"type": "whatsapp", "target": "+1 415 555 0199"},
        "text": "hola",
    }
    r = rest.post("/v1.0/conversation_messages:ingest", json=body)
    assert r.status_code == 200, r.text
    conv = r.json()["conversation"]
    check_shape(conv, CONVERSATION_KEYS)
    assert conv["type"] == "whatsapp" and conv["peer"]["target"] == "+14155550199"
    listed = rest.get("/v1.0/conversations", params={"type": "whatsapp"}).json()["result"]
    assert [c["id"] for c in listed] == [conv["id"]]


@pytest.mark.parametrize("account_type", ACCOUNT_TYPES)
def test_every_voipbin_account_type_is_accepted_and_stored(rest: httpx.Client, account_type: str) -> None:
    r = rest.post("/v1.0/conversation_accounts", json={"type": account_type, "name": f"{account_type} account"})
    assert r.status_code == 200, r.text
    assert rest.get(f"/v1.0/conversation_accounts/{r.json()['id']}").json()["type"] == account_type


def test_every_voipbin_address_type_is_accepted_and_stored(rest: httpx.Client) -> None:
    conv = open_conversation(rest)
    addresses = [{"type": kind, "target": target} for kind, target in ADDRESS_TYPES.items()]
    r = rest.post(f"/v1.0/conversations/{conv['id']}/participants", json={"name": "Ann", "addresses": addresses})
    assert r.status_code == 200, r.text
    stored = {a["type"]: a["target"] for a in r.json()["addresses"]}
    assert stored == ADDRESS_TYPES
    for kind, bad in (("agent", "not-a-uuid"), ("sip", "ann@example.com"), ("whatsapp", "hello")):
        r = rest.post(
            f"/v1.0/conversations/{conv['id']}/participants",
            json={"addresses": [{"type": kind, "target": bad}]},
        )
        assert check_error(r, 400, "INVALID_ARGUMENT")["message"].startswith("participant.addresses[0].target"), kind


# ConversationManagerMessage: the keys VoIPBIN's client reads.
MESSAGE_KEYS = {
    "id": "uuid",
    "customer_id": "uuid",
    "conversation_id": "uuid",
    "reference_id": "uuid",
    "text": "string",
    "tm_create": "date-time",
    "tm_update": "date-time",
    "tm_delete": "date-time-or-null",
}
MESSAGE_REFERENCE_TYPES = {"", "message", "line", "whatsapp", "email"}
MESSAGE_DIRECTIONS = {"outgoing", "incoming"}
MESSAGE_STATUSES = {"progressing", "done", "failed"}


def test_messages_carry_reference_type_and_reference_id(rest: httpx.Client) -> None:
    conv = open_conversation(rest)
    listed = rest.get(f"/v1.0/conversations/{conv['id']}/messages").json()["result"]
    assert len(listed) == 1
    message = listed[0]
    check_shape(message, MESSAGE_KEYS)
    assert message["reference_type"] == "message" == message["channel"]
    assert message["reference_type"] in MESSAGE_REFERENCE_TYPES
    assert message["reference_id"] == NIL_UUID
    assert message["direction"] in MESSAGE_DIRECTIONS and message["status"] in MESSAGE_STATUSES
    got = rest.get(f"/v1.0/conversations/{conv['id']}/messages/{message['id']}").json()
    assert got["reference_type"] == "message" and got["tm_delete"] is None


def test_whatsapp_account_with_provider_data_stores_it_write_only(rest: httpx.Client) -> None:
    body = {  # VoIPBIN's create body, less secret/token (the sending work maps those)
        "type": "whatsapp",
        "name": "support line",
        "detail": "WhatsApp Business",
        "provider_data": {"phone_number_id": "1234567890", "app_secret": "meta-app-secret"},
    }
    r = rest.post("/v1.0/conversation_accounts", json=body)
    assert r.status_code == 200, r.text
    account = r.json()
    assert (account["type"], account["name"], account["detail"]) == ("whatsapp", "support line", "WhatsApp Business")
    check_shape(
        account, {"id": "uuid", "customer_id": "uuid", "tm_create": "date-time", "tm_delete": "date-time-or-null"}
    )
    for read in (account, rest.get(f"/v1.0/conversation_accounts/{account['id']}").json()):
        assert "provider_data" not in read and "credentials" not in read
        assert "meta-app-secret" not in str(read)
    r = rest.put(f"/v1.0/conversation_accounts/{account['id']}", json={"provider_data": {"app_secret": "rotated"}})
    assert r.status_code == 200, r.text
    r = rest.post("/v1.0/conversation_accounts", json={**body, "provider_data": {"app_secret": 7}})
    assert check_error(r, 400, "INVALID_ARGUMENT")["message"].startswith("account.provider_data")


def test_account_message_flow_id_is_stored_and_nil_when_unset(rest: httpx.Client) -> None:
    flow = str(uuid.uuid4())
    r = rest.post("/v1.0/conversation_accounts", json={"type": "line", "name": "line", "message_flow_id": flow})
    assert r.status_code == 200, r.text
    account = r.json()
    assert account["message_flow_id"] == flow
    assert rest.get(f"/v1.0/conversation_accounts/{account['id']}").json()["message_flow_id"] == flow
    r = rest.put(f"/v1.0/conversation_accounts/{account['id']}", json={"message_flow_id": NIL_UUID})
    assert r.status_code == 200 and r.json()["message_flow_id"] == NIL_UUID
    r = rest.post("/v1.0/conversation_accounts", json={"type": "sms", "name": "x", "message_flow_id": "flow-1"})
    assert check_error(r, 400, "INVALID_ARGUMENT")["message"].startswith("account.message_flow_id")
