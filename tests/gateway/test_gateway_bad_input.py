"""Bad input over REST against the real server, on SQLite and PostgreSQL: 400 naming the field, nothing written.

Issue 10 items 1, 2, 6, 7 and 10 as an HTTP client meets them. Bodies are sent
as raw bytes, so JSON escapes such as `\\ud800` reach the server exactly as
written.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from convhub.server.domain import updates
from convhub.server.gateway.openapi import updatable_fields
from convhub.v1 import account_pb2, conversation_pb2, participant_pb2
from tests.conftest import Hub, Tenant
from tests.support import tenant_snapshot

MAX_DEPTH = 24  # README "Limits"
INGEST = "/v1.0/conversation_messages:ingest"


@pytest.fixture
def rest(hub: Hub, tenant: Tenant) -> Iterator[httpx.Client]:
    if hub.http_base is None:
        pytest.skip("the test server runs without its REST port")
    with httpx.Client(
        base_url=hub.http_base, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=10
    ) as client:
        yield client


@pytest.fixture
def conversation_id(rest: httpx.Client) -> str:
    r = rest.post(INGEST, json=ingest_body(peer="+15550002222"))
    assert r.status_code == 200, r.text
    result: str = r.json()["conversation"]["id"]
    return result


def ingest_body(**fields: Any) -> dict[str, Any]:
    return {
        "channel": "message",
        "self": {"type": "tel", "target": "+15559990000"},
        "peer": {"type": "tel", "target": fields.pop("peer", "+15550001111")},
        "text": "hello",
        **fields,
    }


def raw(body: str) -> dict[str, Any]:
    """httpx arguments sending `body` byte for byte (escapes like \\ud800 and \\u0000 stay escapes)."""
    return {"content": body.encode("utf-8"), "headers": {"content-type": "application/json"}}


def assert_refused(hub: Hub, tenant: Tenant, send: Any, field: str, status: int = 400) -> dict[str, Any]:
    """`send()` answers `status` naming `field` (BadRequest and the message), and the tenant's rows are unchanged."""
    before = tenant_snapshot(hub.engine, tenant.customer_id)
    r: httpx.Response = send()
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    violations = [
        v["field"] for d in error["details"] if d["@type"].endswith("BadRequest") for v in d["field_violations"]
    ]
    assert violations == [field], (violations, error["message"])
    assert error["message"].startswith(field + ":"), error["message"]
    assert tenant_snapshot(hub.engine, tenant.customer_id) == before
    result: dict[str, Any] = error
    return result


# Item 1 (NUL) and item 2 (lone surrogates): every way a string reaches a field.
TEXT_CASES = [
    ("text nul", lambda c: (INGEST, json.dumps(ingest_body(text="a\x00b"))), "text"),
    ("text surrogate", lambda c: (INGEST, json.dumps(ingest_body()).replace('"hello"', '"\\ud800"')), "text"),
    ("low surrogate", lambda c: (INGEST, json.dumps(ingest_body()).replace('"hello"', '"x\\udc00y"')), "text"),
    (
        "target_name surrogate",
        lambda c: (
            INGEST,
            json.dumps(ingest_body()).replace(
                '"tel", "target": "+15550001111"', '"tel", "target": "+15550001111", "target_name": "\\udfff"'
            ),
        ),
        "peer.target_name",
    ),
    ("transaction_id nul", lambda c: (INGEST, json.dumps(ingest_body(transaction_id="\x00"))), "transaction_id"),
    (
        "email peer nul",
        lambda c: (
            INGEST,
            json.dumps(
                {
                    "channel": "email",
                    "self": {"type": "email", "target": "us@example.com"},
                    "peer": {"type": "email", "target": "a\x00@example.com"},
                    "text": "x",
                }
            ),
        ),
        "peer.target",
    ),
    (
        "media url surrogate",
        lambda c: (INGEST, json.dumps(ingest_body(medias=[{"url": "u"}])).replace('"u"', '"\\ud83d"')),
        "medias[0].url",
    ),
    ("unknown key surrogate", lambda c: (INGEST, '{"\\ud800": 1}'), "\\ud800"),
]


@pytest.mark.parametrize(("name", "make", "field"), TEXT_CASES, ids=[c[0] for c in TEXT_CASES])
def test_nul_and_lone_surrogates_in_bodies_are_400(
    hub: Hub, tenant: Tenant, rest: httpx.Client, name: str, make: Any, field: str
) -> None:
    path, body = make(rest)
    assert_refused(hub, tenant, lambda: rest.post(path, **raw(body)), field)


def test_text_rules_hold_on_updates_maps_and_structs(
    hub: Hub, tenant: Tenant, rest: httpx.Client, conversation_id: str
) -> None:
    url = f"/v1.0/conversations/{conversation_id}"
    for body, field in (
        ('{"name": "a\\u0000"}', "conversation.name"),
        ('{"tags": ["ok", "\\ud800"]}', "conversation.tags[1]"),
        ('{"metadata": {"k": "\\ud800"}}', "conversation.metadata.k"),
        ('{"metadata": {"\\ud800": 1}}', "conversation.metadata[\\ud800]"),
        ('{"metadata": {"l": [1, {"k": "\\u0000"}]}}', "conversation.metadata.l[1].k"),
    ):
        assert_refused(hub, tenant, lambda body=body: rest.put(url, **raw(body)), field)
    accounts = "/v1.0/conversation_accounts"
    for body, field in (
        ('{"type": "sms", "name": "\\u0000"}', "account.name"),
        ('{"type": "sms", "credentials": {"\\ud800": "v"}}', "account.credentials[\\ud800]"),
        ('{"type": "sms", "credentials": {"k": "\\u0000"}}', "account.credentials[k]"),
    ):
        assert_refused(hub, tenant, lambda body=body: rest.post(accounts, **raw(body)), field)


def test_text_rules_hold_in_query_and_path(hub: Hub, tenant: Tenant, rest: httpx.Client) -> None:
    assert_refused(hub, tenant, lambda: rest.get("/v1.0/conversations?page_token=%00"), "page_token")
    assert_refused(hub, tenant, lambda: rest.get("/v1.0/conversations/%00"), "id")


# Item 6: numbers JSON has no room for.
@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400])
def test_numbers_past_double_range_are_400(
    hub: Hub, tenant: Tenant, rest: httpx.Client, conversation_id: str, number: str
) -> None:
    url = f"/v1.0/conversations/{conversation_id}"
    assert_refused(
        hub, tenant, lambda: rest.put(url, **raw(f'{{"metadata": {{"a": {number}}}}}')), "conversation.metadata.a"
    )
    body = f'{{"metadata": {{"l": [1, {number}]}}}}'
    assert_refused(hub, tenant, lambda: rest.put(url, **raw(body)), "conversation.metadata.l[1]")


def test_numerals_past_pythons_int_limit_are_400(hub: Hub, tenant: Tenant, rest: httpx.Client) -> None:
    """Python's int() refuses numerals over 4300 digits; found by the fuzz test as a 500."""
    r = rest.get("/v1.0/conversations", params={"page_size": "0" * 5000})
    assert r.status_code == 200, r.text  # still just zero
    assert_refused(hub, tenant, lambda: rest.get("/v1.0/conversations", params={"page_size": "1" * 5000}), "page_size")
    body = json.dumps(ingest_body(channel="1" * 5000))
    assert_refused(hub, tenant, lambda: rest.post(INGEST, **raw(body)), "channel")


def test_nan_and_infinity_literals_are_400(hub: Hub, tenant: Tenant, rest: httpx.Client, conversation_id: str) -> None:
    url = f"/v1.0/conversations/{conversation_id}"
    for literal in ("NaN", "Infinity", "-Infinity"):
        assert_refused(
            hub, tenant, lambda literal=literal: rest.put(url, **raw(f'{{"metadata": {{"a": {literal}}}}}')), "body"
        )


# Item 7: one nesting limit, enforced before decoding.
def nested(depth: int) -> str:
    """JSON of `depth` levels of objects: {"a": {"a": ... 1}}."""
    return '{"a": ' * depth + "1" + "}" * depth


def test_body_nesting_up_to_the_limit_is_accepted(rest: httpx.Client, conversation_id: str) -> None:
    body = f'{{"metadata": {nested(MAX_DEPTH - 1)}}}'  # the body object is level 1
    r = rest.put(f"/v1.0/conversations/{conversation_id}", **raw(body))
    assert r.status_code == 200, r.text
    assert r.json()["metadata"] == json.loads(body)["metadata"]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 34, 40, 50, 60, 5000])
def test_body_nested_past_the_limit_is_400(
    hub: Hub, tenant: Tenant, rest: httpx.Client, conversation_id: str, depth: int
) -> None:
    body = f'{{"metadata": {nested(depth - 1)}}}'
    url = f"/v1.0/conversations/{conversation_id}"
    error = assert_refused(hub, tenant, lambda: rest.put(url, **raw(body)), "body")
    assert f"nested deeper than {MAX_DEPTH} levels" in error["message"]
    arrays = "[" * depth + "]" * depth  # arrays count as much as objects, wherever they are
    assert_refused(hub, tenant, lambda: rest.post(INGEST, **raw(f'{{"medias": {arrays}}}')), "body")


def test_brackets_inside_strings_do_not_count(rest: httpx.Client) -> None:
    r = rest.post(INGEST, json=ingest_body(text="[{" * 100 + '\\"' + "}]" * 100))
    assert r.status_code == 200, r.text


# Item 10: one credential per call.
def test_ambiguous_credentials_are_400(hub: Hub, tenant: Tenant, other_tenant: Tenant) -> None:
    assert hub.http_base is not None
    mine, theirs = f"Bearer {tenant.token}", f"Bearer {other_tenant.token}"
    with httpx.Client(base_url=hub.http_base, timeout=10) as anon:
        for headers, params, field in (
            ([("authorization", mine), ("authorization", theirs)], {}, "authorization"),
            ([("authorization", mine), ("authorization", "Basic dXNlcjpwdw==")], {}, "authorization"),
            ([("authorization", mine)], {"token": other_tenant.token}, "token"),
            ([("authorization", mine)], {"accesskey": other_tenant.token}, "accesskey"),
            ([], {"token": tenant.token, "accesskey": other_tenant.token}, "accesskey"),
            ([], [("token", tenant.token), ("token", other_tenant.token)], "token"),
        ):
            error = assert_refused(
                hub, tenant, lambda h=headers, p=params: anon.get("/v1.0/conversations", headers=h, params=p), field
            )
            assert error["details"][0]["reason"] == "AMBIGUOUS_CREDENTIALS"
        for headers, params in (
            ([("authorization", mine), ("authorization", mine)], {}),
            ([("authorization", mine)], {"token": tenant.token, "accesskey": tenant.token}),
            ([], [("token", tenant.token), ("token", tenant.token)]),
        ):
            r = anon.get("/v1.0/conversations", headers=headers, params=params)
            assert r.status_code == 200, r.text


# Item 8: the document says what the server accepts.
def test_openapi_says_what_the_server_accepts(rest: httpx.Client) -> None:
    doc = rest.get("/v1.0/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for op in item.values():
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert param["schema"]["format"] == "uuid", (path, param)
                if param["name"] == "page_size":
                    assert param["schema"]["minimum"] == 0, (path, param)
    conversation = schemas["convhub.v1.Conversation"]["properties"]
    assert conversation["name"]["maxLength"] == 255
    assert conversation["tags"]["maxItems"] == 50
    assert conversation["tags"]["items"]["minLength"] == 1
    assert f"at most {MAX_DEPTH} levels" in conversation["metadata"]["description"]
    account = schemas["convhub.v1.Account"]
    assert account["required"] == ["type"]
    assert account["properties"]["credentials"]["maxProperties"] == 20
    assert account["properties"]["credentials"]["additionalProperties"]["maxLength"] == 4096
    assert "type" not in schemas["convhub.v1.Account.Update"]["properties"]  # IMMUTABLE
    ingest = schemas["convhub.v1.IngestMessageRequest"]
    assert ingest["required"] == ["peer"]
    assert ingest["properties"]["request_id"] == {"type": "string", "pattern": "^[ -~]*$", "maxLength": 64}
    assert ingest["properties"]["text"]["pattern"] == "^[^\\u0000]*$"
    assert doc["paths"]["/v1.0/conversation_messages:ingest"]["post"]["requestBody"]["required"] is True
    update = {p["name"]: p for p in doc["paths"]["/v1.0/conversations/{id}"]["put"]["parameters"]}
    mask = re.compile(update["update_mask"]["schema"]["pattern"])
    assert mask.fullmatch("name,ownerType,tags") and not mask.fullmatch("type") and not mask.fullmatch("self.target")


def test_update_masks_in_the_document_are_the_ones_the_server_takes() -> None:
    """The document derives them from the contract (neither OUTPUT_ONLY nor IMMUTABLE); the server lists them."""
    for message, updatable in (
        (conversation_pb2.Conversation, updates.CONVERSATION_UPDATABLE),
        (account_pb2.Account, updates.ACCOUNT_UPDATABLE),
        (participant_pb2.Participant, updates.PARTICIPANT_UPDATABLE),
    ):
        assert {f.name for f in updatable_fields(message.DESCRIPTOR)} == set(updatable), message
