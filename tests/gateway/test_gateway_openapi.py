"""The OpenAPI document: its shape, and schemathesis finding no response that contradicts it."""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

# The checks CI cares about: no 5xx, documented status codes/content types/headers, bodies matching schemas.
SCHEMATHESIS_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,"
    "response_schema_conformance,unsupported_method,allow_header_conformance"
)


@pytest.fixture(scope="module")
async def doc(anon: httpx.AsyncClient) -> dict[str, Any]:
    r = await anon.get("/v1.0/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    result: dict[str, Any] = r.json()
    return result


def test_every_binding_is_an_operation(doc: dict[str, Any]) -> None:
    assert doc["openapi"].startswith("3.")
    ops = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert ops >= {
        ("GET", "/v1/items/{id}"),
        ("PUT", "/v1/items/{id}"),
        ("PATCH", "/v1/items/{id}"),
        ("GET", "/v1/items/special"),
        ("GET", "/v1/items"),
        ("GET", "/v1/shelves/{name}"),
        ("POST", "/v1/shelves/{shelf}/items"),
        ("POST", "/v1/echo"),
        ("POST", "/v1/shelves/{shelf}:echo"),
        ("GET", "/v1/echo/{shelf}"),
        ("POST", "/v1/items:ingest"),
        ("DELETE", "/v1/fail/{code}"),
        ("GET", "/v1/watch"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
    }
    op_ids = [op["operationId"] for item in doc["paths"].values() for op in item.values()]
    assert len(op_ids) == len(set(op_ids))


def test_parameters_and_bodies(doc: dict[str, Any]) -> None:
    put = doc["paths"]["/v1/items/{id}"]["put"]
    assert put["parameters"][0]["description"] == "Fills `item.id`."
    assert [p["name"] for p in put["parameters"]] == ["id", "update_mask"]
    # A partial body's fields become the update mask: its own variant, requiring nothing.
    assert put["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/gwtest.v1.Item.Update"
    }
    assert "required" not in doc["components"]["schemas"]["gwtest.v1.Item.Update"]
    assert put["parameters"][1]["schema"]["pattern"].startswith("^(?:(?:active|")  # the updatable fields
    listing = {p["name"]: p for p in doc["paths"]["/v1/items"]["get"]["parameters"]}
    assert listing["filter.color"]["schema"] == {"$ref": "#/components/schemas/gwtest.v1.Color"}
    assert listing["ids"]["schema"]["type"] == "array" and listing["ids"]["explode"] is True
    assert listing["since"]["schema"]["type"] == "string"  # int64 travels as a string
    assert listing["after"]["schema"] == {"type": "string", "format": "date-time"}
    shelf = doc["paths"]["/v1/shelves/{name}"]["get"]["parameters"][0]
    assert shelf["description"] == "Fills `name`."
    echo_body = doc["paths"]["/v1/shelves/{shelf}:echo"]["post"]["requestBody"]["content"]["application/json"]
    body_schema = doc["components"]["schemas"][echo_body["schema"]["$ref"].rsplit("/", 1)[1]]
    assert "shelf" not in body_schema["properties"]  # bound by the path


def test_component_schemas(doc: dict[str, Any]) -> None:
    schemas = doc["components"]["schemas"]
    assert schemas["gwtest.v1.Color"]["enum"] == ["unspecified", "red", "dark_blue"]
    item = schemas["gwtest.v1.Item"]["properties"]
    assert item["id"]["readOnly"] is True
    assert item["secrets"]["writeOnly"] is True
    assert item["tm_create"] == {"type": "string", "format": "date-time"}
    assert item["metadata"]["type"] == "object"
    assert item["big_count"]["type"] == "string"
    assert item["labels"] == {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"}}
    assert item["maybe"]["nullable"] is True
    assert "not" in schemas["gwtest.v1.Item"]  # the oneof
    required = ["status", "reason", "message", "request_id", "code", "details"]  # VoIPBIN's envelope + extras
    assert schemas["Error"]["properties"]["error"]["required"] == required
    security = doc["components"]["securitySchemes"]
    assert security["bearer"]["scheme"] == "bearer"
    assert {security["token"]["name"], security["accesskey"]["name"]} == {"token", "accesskey"}
    assert (security["token_cookie"]["in"], security["accesskey_cookie"]["name"]) == ("cookie", "accesskey")
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def test_streaming_operation_documents_both_formats(doc: dict[str, Any]) -> None:
    content = doc["paths"]["/v1/watch"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"application/x-ndjson", "text/event-stream"}


async def test_schemathesis_finds_no_contradiction(gw_url: str, tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    exe = shutil.which("schemathesis") or shutil.which("st")
    cmd = [exe] if exe else [sys.executable, "-m", "schemathesis.cli"]
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        "run",
        f"{gw_url}/v1.0/openapi.json",
        "-H",
        "Authorization: Bearer good",
        "--max-examples",
        "4",
        "--phases",
        "fuzzing",
        "--exclude-path-regex",
        "^/v1/(fail|sleep)",
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--seed",
        "1",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode(errors="replace")[-6000:]
