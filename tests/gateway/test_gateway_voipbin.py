"""The VoIPBIN-compatible REST routes against the real `convhub serve`, on SQLite and PostgreSQL.

Uses the session servers from tests/conftest.py (`hub`, `tenant`); every call
goes over a real HTTP connection to the server's REST port.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest


@pytest.fixture
def other(base: str, other_tenant: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {other_tenant.token}"}, timeout=10) as client:
        yield client


def new_peer() -> str:
    return "+1555" + str(uuid.uuid4().int)[:7]


def ingest(rest: httpx.Client, peer: str | None = None, text: str = "hello", **extra: Any) -> dict[str, Any]:
    body = {
        "channel": "message",
        "self": {"type": "tel", "target": "+15559990000"},
        "peer": {"type": "tel", "target": peer or new_peer()},
        "text": text,
        **extra,
    }
    r = rest.post("/v1.0/conversation_messages:ingest", json=body)
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def assert_error(r: httpx.Response, http: int, status: str) -> dict[str, Any]:
    assert r.status_code == http, r.text
    assert r.headers["content-type"] == "application/json"
    err: dict[str, Any] = r.json()["error"]
    assert (err["code"], err["status"]) == (http, status)
    assert isinstance(err["message"], str) and err["message"]
    return err


def test_conversation_in_voipbin_shape(rest: httpx.Client) -> None:
    created = ingest(rest, text="hi there")
    assert created["conversation_created"] is True
    conv_id = created["conversation"]["id"]
    r = rest.get(f"/v1.0/conversations/{conv_id}")
    assert r.status_code == 200
    conv = r.json()
    assert conv["id"] == conv_id
    assert conv["type"] == "message"
    assert conv["state"] == "open"
    assert conv["self"] == {"type": "tel", "target": "+15559990000", "target_name": ""}
    for key in ("customer_id", "account_id", "name", "detail", "owner_type", "owner_id", "metadata", "tags"):
        assert key in conv  # every field present, snake_case
    assert datetime.fromisoformat(conv["tm_create"].replace("Z", "+00:00"))
    assert conv["tm_delete"] is None  # VoIPBIN sends null for a live resource
    assert "tmCreate" not in conv


def test_list_conversations_pages(rest: httpx.Client) -> None:
    ids = {ingest(rest)["conversation"]["id"] for _ in range(5)}
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        r = rest.get("/v1.0/conversations", params={"page_size": 2, "page_token": token})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"result", "next_page_token"}
        assert len(body["result"]) <= 2
        seen += [c["id"] for c in body["result"]]
        pages += 1
        token = body["next_page_token"]
        if not token:
            break
    assert pages == 3
    assert set(seen) == ids and len(seen) == len(ids)


def test_partial_put_and_patch_change_only_given_fields(rest: httpx.Client) -> None:
    conv_id = ingest(rest)["conversation"]["id"]
    r = rest.put(f"/v1.0/conversations/{conv_id}", json={"name": "alice", "owner_type": "agent", "owner_id": "a-1"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["owner_type"], r.json()["owner_id"]) == ("alice", "agent", "a-1")
    r = rest.put(f"/v1.0/conversations/{conv_id}", json={"detail": "vip"})
    assert r.status_code == 200, r.text
    conv = r.json()
    assert (conv["name"], conv["detail"], conv["owner_type"], conv["owner_id"]) == ("alice", "vip", "agent", "a-1")
    r = rest.patch(f"/v1.0/conversations/{conv_id}", json={"ownerId": "a-2"})
    assert r.status_code == 200, r.text
    conv = rest.get(f"/v1.0/conversations/{conv_id}").json()
    assert (conv["name"], conv["detail"], conv["owner_id"]) == ("alice", "vip", "a-2")
    # An explicit update_mask wins over the body's keys.
    r = rest.put(f"/v1.0/conversations/{conv_id}", params={"update_mask": "name"}, json={"name": "bob", "detail": "x"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["detail"]) == ("bob", "vip")


def test_messages(rest: httpx.Client) -> None:
    peer = new_peer()
    first = ingest(rest, peer=peer, text="one")
    conv_id = first["conversation"]["id"]
    ingest(rest, peer=peer, text="two")
    r = rest.get(f"/v1.0/conversations/{conv_id}/messages", params={"page_size": 1})
    assert r.status_code == 200
    page = r.json()
    assert len(page["result"]) == 1 and page["next_page_token"]
    msg = page["result"][0]
    assert msg["direction"] == "incoming"
    assert msg["channel"] == "message"
    assert msg["status"] in ("done", "progressing")
    r = rest.get(f"/v1.0/conversations/{conv_id}/messages/{first['message']['id']}")
    assert r.status_code == 200
    assert r.json()["text"] == "one"
    # Sending arrives with the channels issue: a clear error, never a fake success.
    r = rest.post(f"/v1.0/conversations/{conv_id}/messages", json={"text": "hi", "medias": []})
    assert r.status_code in (400, 501), r.text
    assert r.json()["error"]["message"]


def test_accounts_crud_never_returns_credentials(rest: httpx.Client) -> None:
    body = {
        "type": "sms",
        "name": "twilio",
        "address": {"type": "tel", "target": "+15557770000"},
        "credentials": {"auth_token": "s3cret-token"},
    }
    r = rest.post("/v1.0/conversation_accounts", json=body)
    assert r.status_code == 200, r.text
    acc = r.json()
    assert acc["type"] == "sms" and acc["name"] == "twilio"
    acc_id = acc["id"]
    r = rest.put(f"/v1.0/conversation_accounts/{acc_id}", json={"detail": "main"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["detail"]) == ("twilio", "main")
    listing = rest.get("/v1.0/conversation_accounts")
    assert [a["id"] for a in listing.json()["result"]] == [acc_id]
    got = rest.get(f"/v1.0/conversation_accounts/{acc_id}")
    assert got.status_code == 200
    r = rest.delete(f"/v1.0/conversation_accounts/{acc_id}")
    assert r.status_code == 200
    assert r.json()["tm_delete"]
    for response in (acc, got.json(), listing.json(), r.json()):
        assert "s3cret-token" not in str(response)
        assert "credentials" not in str(response)
    assert_error(rest.get(f"/v1.0/conversation_accounts/{acc_id}"), 404, "NOT_FOUND")


def test_participants(rest: httpx.Client) -> None:
    conv_id = ingest(rest)["conversation"]["id"]
    r = rest.post(
        f"/v1.0/conversations/{conv_id}/participants",
        json={"name": "Ann", "addresses": [{"type": "email", "target": "ann@example.com"}]},
    )
    assert r.status_code == 200, r.text
    part = r.json()
    r = rest.put(f"/v1.0/conversations/{conv_id}/participants/{part['id']}", json={"name": "Anne"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Anne"
    assert r.json()["addresses"] == part["addresses"]
    r = rest.get(f"/v1.0/conversations/{conv_id}/participants")
    assert part["id"] in [p["id"] for p in r.json()["result"]]
    assert rest.delete(f"/v1.0/conversations/{conv_id}/participants/{part['id']}").status_code == 200


def test_auth_by_all_three_means(base: str, tenant: Any) -> None:
    with httpx.Client(base_url=base, timeout=10) as anon:
        assert anon.get("/v1.0/conversations", headers={"Authorization": f"Bearer {tenant.token}"}).status_code == 200
        assert anon.get("/v1.0/conversations", params={"token": tenant.token}).status_code == 200
        assert anon.get("/v1.0/conversations", params={"accesskey": tenant.token}).status_code == 200
        for r in (
            anon.get("/v1.0/conversations"),
            anon.get("/v1.0/conversations", params={"token": "nope"}),
            anon.get("/v1.0/conversations", params={"accesskey": "nope"}),
            anon.get("/v1.0/conversations", headers={"Authorization": "Bearer nope"}),
        ):
            assert_error(r, 401, "UNAUTHENTICATED")
            assert r.headers["www-authenticate"].startswith("Bearer")


def test_other_tenants_ids_are_not_found(rest: httpx.Client, other: httpx.Client) -> None:
    conv_id = ingest(rest)["conversation"]["id"]
    assert_error(other.get(f"/v1.0/conversations/{conv_id}"), 404, "NOT_FOUND")
    assert_error(other.put(f"/v1.0/conversations/{conv_id}", json={"name": "x"}), 404, "NOT_FOUND")
    assert other.get("/v1.0/conversations").json()["result"] == []


def test_bad_input_is_400_naming_the_field(rest: httpx.Client) -> None:
    conv_id = ingest(rest)["conversation"]["id"]
    err = assert_error(rest.put(f"/v1.0/conversations/{conv_id}", json={"colour": "red"}), 400, "INVALID_ARGUMENT")
    assert "conversation.colour" in err["message"]
    err = assert_error(rest.get("/v1.0/conversations", params={"page_size": "many"}), 400, "INVALID_ARGUMENT")
    assert err["message"].startswith("page_size")
    assert_error(rest.get("/v1.0/conversations", params={"page_size": -1}), 400, "INVALID_ARGUMENT")
    r = rest.post("/v1.0/conversation_accounts", content=b"{not json", headers={"content-type": "application/json"})
    assert_error(r, 400, "INVALID_ARGUMENT")
    r = rest.post("/v1.0/conversation_accounts", content=b"<a/>", headers={"content-type": "text/xml"})
    assert_error(r, 400, "INVALID_ARGUMENT")
    err = assert_error(rest.post("/v1.0/conversation_accounts", json={"type": "pigeon"}), 400, "INVALID_ARGUMENT")
    assert err["message"].startswith("account.type")


def test_oversize_body_is_413(rest: httpx.Client) -> None:
    r = rest.post("/v1.0/conversation_messages:ingest", json={"text": "x" * (2 * 1024 * 1024)})
    assert_error(r, 413, "RESOURCE_EXHAUSTED")


def test_unknown_path_and_wrong_verb(rest: httpx.Client) -> None:
    assert_error(rest.get("/v1.0/nothing_here"), 404, "NOT_FOUND")
    r = rest.delete("/v1.0/conversations")
    assert_error(r, 405, "UNIMPLEMENTED")
    assert r.headers["allow"] == "GET"


def test_health_and_openapi(base: str) -> None:
    with httpx.Client(base_url=base, timeout=10) as anon:
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/readyz").status_code == 200
        doc = anon.get("/v1.0/openapi.json").json()
    ops = {(m.upper(), p) for p, item in doc["paths"].items() for m in item}
    assert {
        ("GET", "/v1.0/conversations"),
        ("GET", "/v1.0/conversations/{id}"),
        ("PUT", "/v1.0/conversations/{id}"),
        ("GET", "/v1.0/conversations/{conversation_id}/messages"),
        ("POST", "/v1.0/conversations/{conversation_id}/messages"),
        ("GET", "/v1.0/conversation_accounts"),
        ("POST", "/v1.0/conversation_accounts"),
        ("DELETE", "/v1.0/conversation_accounts/{id}"),
        ("POST", "/v1.0/conversation_messages:ingest"),
    } <= ops
    schemas = doc["components"]["schemas"]
    assert "credentials" in schemas["convhub.v1.Account"]["properties"]  # documented as write-only
    assert schemas["convhub.v1.Account"]["properties"]["credentials"]["writeOnly"] is True
    conversation_types = ["unspecified", "message", "line", "email", "webchat", "whatsapp"]
    assert schemas["convhub.v1.ConversationType"]["enum"] == conversation_types
    assert ("POST", "/v1.0/conversations/{id}/unassign") in ops
    assert schemas["convhub.v1.Account"]["properties"]["provider_data"]["writeOnly"] is True
    assert schemas["convhub.v1.Message"]["properties"]["reference_type"]["readOnly"] is True


async def test_schemathesis_against_the_real_server(base: str, tenant: Any, tmp_path: Path) -> None:
    """Bounded schemathesis run: no 5xx, responses match the document, and no request the document allows is
    refused for its data (schemathesis_hooks.py lists the rules no schema can state)."""
    pytest.importorskip("schemathesis")
    exe = shutil.which("schemathesis") or shutil.which("st")
    cmd = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "run",
        f"{base}/v1.0/openapi.json",
        "-H",
        f"Authorization: Bearer {tenant.token}",
        "--max-examples",
        "6",
        "--phases",
        "fuzzing",
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
        "response_schema_conformance,unsupported_method,allow_header_conformance,schema_valid_requests_are_accepted",
        # The token travels in the header; a second, generated one would be refused as ambiguous.
        "--generation-with-security-parameters",
        "false",
        # A subscription is an endless stream: no response would ever complete (tested in test_event_sse.py).
        "--exclude-operation-id",
        "EventService_SubscribeEvents",
        "--seed",
        "1",
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("schemathesis_hooks.py"))},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 240)
    assert proc.returncode == 0, out.decode(errors="replace")[-6000:]
