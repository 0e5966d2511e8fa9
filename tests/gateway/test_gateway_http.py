"""The REST shim over a real HTTP connection, driven only by the test proto's annotations."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from gwsupport import GOOD, MAX_BODY, EchoHandlers, Readiness, echo_pb2

# --- path templates -----------------------------------------------------------


async def test_field_variable(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    r = await gw.get("/v1/items/abc")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["id"] == "abc"
    assert body["display_name"] == "item abc"
    assert body["inner"]["label"] == "c1"  # the caller resolved from the token
    assert gw_handlers.last["GetItem"].id == "abc"


async def test_percent_encoded_variable_keeps_slash_inside_segment(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/items/a%2Fb%20c")
    assert r.status_code == 200
    assert r.json()["id"] == "a/b c"


async def test_literal_segment_beats_variable(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/items/special")
    assert r.status_code == 200
    assert r.json()["id"] == "the-special-one"


async def test_pattern_variable(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    r = await gw.get("/v1/shelves/s1", params={"note": "hi"})
    assert r.status_code == 200
    assert r.json() == {"name": "shelves/s1", "note": "hi"}
    assert (await gw.get("/v1/shelves/s1/extra")).status_code == 404
    assert (await gw.get("/v1/racks/s1")).status_code == 404


async def test_nested_variable_body_field_and_derived_update_mask(gw: httpx.AsyncClient) -> None:
    r = await gw.put(
        "/v1/items/i1",
        json={"display_name": "x", "inner": {"label": "l", "color": "red"}, "metadata": {"a": 1}, "colors": []},
    )
    assert r.status_code == 200
    body = r.json()
    assert body["request"]["item"]["id"] == "i1"
    assert body["update_mask"] == ["display_name", "inner.label", "inner.color", "metadata", "colors"]


async def test_update_mask_ignores_path_bound_id_and_explicit_mask_wins(gw: httpx.AsyncClient) -> None:
    r = await gw.patch("/v1/items/i1", json={"id": "other", "displayName": "x"})
    assert r.json()["update_mask"] == ["display_name"]
    assert r.json()["request"]["item"]["id"] == "i1"  # the path wins over the body
    r = await gw.put("/v1/items/i1", params={"update_mask": "displayName,inner.label"}, json={"display_name": "x"})
    assert r.json()["update_mask"] == ["display_name", "inner.label"]
    r = await gw.put("/v1/items/i1", json={})
    assert r.json()["update_mask"] == []


async def test_body_field_plus_path(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    r = await gw.post(
        "/v1/shelves/s1/items",
        params={"request_id": "r-1"},
        json={"displayName": "camel", "color": "COLOR_DARK_BLUE", "count": "7", "inner": {"big": 5, "tags": ["t"]}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shelf_name"] == "s1"
    assert body["display_name"] == "camel"
    assert body["color"] == "dark_blue"
    assert body["count"] == 7
    assert body["inner"]["big"] == "5"
    assert gw_handlers.last["CreateItem"].request_id == "r-1"


async def test_body_star_and_additional_bindings(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    r = await gw.post("/v1/echo", json={"shelf": "s", "notes": ["a", "b"], "code": 3, "item": {"count": 2}})
    assert r.status_code == 200
    assert r.json()["request"]["notes"] == ["a", "b"]
    assert r.json()["request"]["item"]["count"] == 2
    # second binding: path variable overrides the body
    r = await gw.post("/v1/shelves/s9:echo", json={"shelf": "ignored", "notes": ["x"]})
    assert r.status_code == 200
    assert r.json()["request"]["shelf"] == "s9"
    assert r.json()["request"]["code"] == 0
    # third binding: GET with query params
    r = await gw.get("/v1/echo/s3", params={"notes": ["n1", "n2"], "code": "9", "item.display_name": "d"})
    assert r.status_code == 200
    req = gw_handlers.last["Echo"]
    assert (req.shelf, list(req.notes), req.code, req.item.display_name) == ("s3", ["n1", "n2"], 9, "d")


async def test_custom_verb(gw: httpx.AsyncClient) -> None:
    r = await gw.post("/v1/items:ingest", json={"shelf": "s"})
    assert r.status_code == 200
    assert r.json()["update_mask"] == ["ingested"]
    # A ':' inside a plain variable is still a value, not a verb.
    r = await gw.get("/v1/items/a:b")
    assert r.status_code == 200
    assert r.json()["id"] == "a:b"
    assert (await gw.post("/v1/items:unknown", json={})).status_code in (404, 405)


async def test_unannotated_rpc_is_not_exposed(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1.0/openapi.json")
    assert "Hidden" not in r.text


# --- query parameters ----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/items?page_size=5&unknown_param=1", "unknown_param"),
        ("/v1/items?filterBig=x", "filterBig"),
        ("/v1/echo/s3?code=9&cache_buster=1", "cache_buster"),
    ],
)
async def test_unknown_query_parameter_is_400_naming_it(gw: httpx.AsyncClient, path: str, param: str) -> None:
    r = await gw.get(path)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["reason"] == "UNKNOWN_QUERY_PARAMETER"
    assert err["details"][-1]["field_violations"][0]["field"] == param


async def test_query_parameter_on_a_body_star_route_is_400(gw: httpx.AsyncClient) -> None:
    r = await gw.post("/v1/shelves/s9:echo", params={"code": "5"}, json={"notes": ["x"]})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["reason"] == "UNKNOWN_QUERY_PARAMETER"


async def test_query_parameters_all_shapes(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    r = await gw.get(
        "/v1/items?"
        "page_size=5&pageToken=tok&ids=a&ids=b&numbers=1&numbers=-2&color=red&colors=dark_blue&colors=COLOR_RED"
        "&colors=2&include_deleted=true&since=-9007199254740993&min_ratio=0.5&after=2024-01-02T03:04:05Z"
        "&fields=displayName,inner.label&limit=3&maybe_name=&filter.label=L&filter.color=dark_blue"
        "&filter.tags=x&filter.tags=y"
    )
    assert r.status_code == 200, r.text
    assert [i["id"] for i in r.json()["result"]] == ["a", "b"]
    assert r.json()["next_page_token"] == "next"
    req = gw_handlers.last["ListItems"]
    assert req.page_size == 5
    assert req.page_token == "tok"
    assert list(req.numbers) == [1, -2]
    assert req.color == echo_pb2.COLOR_RED
    assert list(req.colors) == [echo_pb2.COLOR_DARK_BLUE, echo_pb2.COLOR_RED, echo_pb2.COLOR_DARK_BLUE]
    assert req.include_deleted is True
    assert req.since == -9007199254740993
    assert req.min_ratio == 0.5
    assert req.after.seconds == 1704164645
    assert list(req.fields.paths) == ["display_name", "inner.label"]
    assert req.HasField("limit") and req.limit.value == 3
    assert req.HasField("maybe_name") and req.maybe_name == ""
    assert req.filter.label == "L"
    assert req.filter.color == echo_pb2.COLOR_DARK_BLUE
    assert list(req.filter.tags) == ["x", "y"]


async def test_auth_query_params_are_not_request_fields(anon: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    r = await anon.get("/v1/items", params={"token": GOOD, "page_token": "p"})
    assert r.status_code == 200
    assert gw_handlers.last["ListItems"].page_token == "p"


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("page_size=abc", "page_size"),
        ("page_size=99999999999", "page_size"),
        ("page_size=1.5", "page_size"),
        ("include_deleted=maybe", "include_deleted"),
        ("color=purple", "color"),
        ("colors=red&colors=7", "colors"),
        ("filter.color=nope", "filter.color"),
        ("since=12x", "since"),
        ("min_ratio=fast", "min_ratio"),
        ("after=yesterday", "after"),
        ("page_size=1&page_size=2", "page_size"),
        ("fields=a b", "fields"),
    ],
)
async def test_bad_query_value_is_400_naming_the_field(gw: httpx.AsyncClient, query: str, field: str) -> None:
    r = await gw.get(f"/v1/items?{query}")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["message"].startswith(f"{field}:")
    violations = next(d for d in err["details"] if d["@type"].endswith("BadRequest"))["field_violations"]
    assert violations[0]["field"] == field


# --- JSON bodies ------------------------------------------------------------------


async def test_camel_case_input_snake_case_output_and_all_field_kinds(gw: httpx.AsyncClient) -> None:
    item = {
        "shelfName": "s",
        "display_name": "d",
        "color": 2,
        "count": -3,
        "bigCount": "123456789012345",
        "small": 4294967295,
        "active": True,
        "ratio": "Infinity",
        "weight": 1.5,
        "blob": "aGk=",
        "inners": [{"label": "a"}, {"color": "red"}],
        "colors": ["red", "COLOR_DARK_BLUE", 0],
        "labels": {"x": "y"},
        "byNumber": {"7": {"label": "seven"}},
        "tmCreate": "2024-05-06T07:08:09.5+02:00",
        "ttl": "1.5s",
        "metadata": {"nested": {"list": [1, "a", None, True]}},
        "maybe": 0,
        "nickname": "",
        "secrets": {"k": "v"},
        "anyValue": None,
        "innerChoice": {"label": "chosen"},
        "bigList": ["1", 2],
        "huge": "18446744073709551615",
    }
    r = await gw.post("/v1/shelves/s1/items", json=item)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["shelf_name"] == "s1"
    assert out["color"] == "dark_blue"
    assert out["big_count"] == "123456789012345"
    assert out["small"] == 4294967295
    assert out["ratio"] == "Infinity"
    assert out["blob"] == "aGk="
    assert out["inners"] == [
        {"label": "a", "color": "unspecified", "big": "0", "tags": []},
        {"label": "", "color": "red", "big": "0", "tags": []},
    ]
    assert out["colors"] == ["red", "dark_blue", "unspecified"]
    assert out["by_number"] == {"7": {"label": "seven", "color": "unspecified", "big": "0", "tags": []}}
    assert out["tm_create"] == "2024-05-06T05:08:09.500Z"
    assert out["ttl"] == "1.500s"
    assert out["metadata"] == {"nested": {"list": [1.0, "a", None, True]}}
    assert out["maybe"] == 0
    assert out["nickname"] == ""
    assert "secrets" not in out  # INPUT_ONLY: accepted, never returned
    assert "any_value" in out and out["any_value"] is None
    assert out["inner_choice"]["label"] == "chosen"
    assert "text_choice" not in out
    assert out["big_list"] == ["1", "2"]
    assert out["huge"] == "18446744073709551615"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"nope": 1}, "item.nope"),
        ({"inner": {"nope": 1}}, "item.inner.nope"),
        ({"inners": [{}, {"bad": 1}]}, "item.inners[1].bad"),
        ({"count": "x"}, "item.count"),
        ({"count": 2**31}, "item.count"),
        ({"count": True}, "item.count"),
        ({"small": -1}, "item.small"),
        ({"active": "yes"}, "item.active"),
        ({"color": "violet"}, "item.color"),
        ({"color": 99}, "item.color"),
        ({"colors": "red"}, "item.colors"),
        ({"colors": ["red", "x"]}, "item.colors[1]"),
        ({"tm_create": "not a time"}, "item.tm_create"),
        ({"ttl": 5}, "item.ttl"),
        ({"metadata": [1]}, "item.metadata"),
        ({"blob": "***"}, "item.blob"),
        ({"labels": {"a": 1}}, "item.labels[a]"),
        ({"by_number": {"x": {}}}, "item.by_number[x]"),
        ({"display_name": "a", "displayName": "b"}, "item.display_name"),
        ({"text_choice": "a", "inner_choice": {}}, "item.inner_choice"),
        ({"inner": "flat"}, "item.inner"),
        ({"weight": 1e39}, "item.weight"),
        ({"big_count": 1.5}, "item.big_count"),
    ],
)
async def test_bad_body_is_400_naming_the_field(gw: httpx.AsyncClient, body: dict[str, object], field: str) -> None:
    r = await gw.post("/v1/shelves/s1/items", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["status"] == "INVALID_ARGUMENT"
    assert err["code"] == 400
    violations = next(d for d in err["details"] if d["@type"].endswith("BadRequest"))["field_violations"]
    assert violations[0]["field"] == field, err


@pytest.mark.parametrize(
    "raw",
    [b"{", b"not json", b"[1,2]", b'"str"', b"\xff\xfe\x00", b'{"count": NaN}', b"[" * 100_000, b"<xml/>"],
)
async def test_malformed_body_is_400_never_500(gw: httpx.AsyncClient, raw: bytes) -> None:
    r = await gw.post("/v1/echo", content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (400, 413), r.text
    assert r.json()["error"]["status"] in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED")


async def test_empty_body_is_an_empty_message(gw: httpx.AsyncClient) -> None:
    r = await gw.post("/v1/echo", content=b"")
    assert r.status_code == 200
    assert r.json()["request"]["notes"] == []


async def test_oversize_body_by_content_length_is_413(gw: httpx.AsyncClient) -> None:
    r = await gw.post("/v1/echo", json={"notes": ["x" * MAX_BODY]})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == 413


async def test_oversize_chunked_body_is_413(gw: httpx.AsyncClient) -> None:
    async def chunks():  # no Content-Length: the streamed size counts
        for _ in range(10):
            yield b" " * 1000

    r = await gw.post("/v1/echo", content=chunks())
    assert r.status_code == 413


# --- enums ------------------------------------------------------------------------


async def test_enum_short_names_both_ways(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    for spelling in ("dark_blue", "DARK_BLUE", "COLOR_DARK_BLUE", "color_dark_blue", 2, "2"):
        r = await gw.post("/v1/shelves/s1/items", json={"color": spelling})
        assert r.status_code == 200, (spelling, r.text)
        assert r.json()["color"] == "dark_blue"
        assert gw_handlers.last["CreateItem"].item.color == echo_pb2.COLOR_DARK_BLUE


# --- auth -------------------------------------------------------------------------


async def test_auth_by_all_three_means(anon: httpx.AsyncClient) -> None:
    assert (await anon.get("/v1/items/x", headers={"Authorization": f"Bearer {GOOD}"})).status_code == 200
    assert (await anon.get("/v1/items/x", headers={"Authorization": f"bearer {GOOD}"})).status_code == 200
    assert (await anon.get("/v1/items/x", params={"token": GOOD})).status_code == 200
    assert (await anon.get("/v1/items/x", params={"accesskey": GOOD})).status_code == 200


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({}, {}),
        ({"Authorization": "Bearer bad"}, {}),
        ({"Authorization": "Basic Z29vZDo="}, {}),
        ({}, {"token": "bad"}),
        ({}, {"accesskey": "bad"}),
        ({}, {"token": ""}),
    ],
)
async def test_unauthenticated_is_401_with_www_authenticate(
    anon: httpx.AsyncClient, headers: dict[str, str], params: dict[str, str]
) -> None:
    r = await anon.get("/v1/items/x", headers=headers, params=params)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["status"] == "UNAUTHENTICATED"


# --- errors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "http"),
    [
        ("INVALID_ARGUMENT", 400),
        ("FAILED_PRECONDITION", 400),
        ("OUT_OF_RANGE", 400),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("ABORTED", 409),
        ("RESOURCE_EXHAUSTED", 429),
        ("CANCELLED", 499),
        ("UNIMPLEMENTED", 501),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
        ("UNKNOWN", 500),
        ("INTERNAL", 500),
        ("DATA_LOSS", 500),
    ],
)
async def test_error_code_mapping(gw: httpx.AsyncClient, code: str, http: int) -> None:
    r = await gw.delete(f"/v1/fail/{code}")
    assert r.status_code == http
    err = r.json()["error"]
    assert err["code"] == http
    assert err["status"] == code
    assert err["details"][0]["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"
    assert err["details"][0]["domain"] == "convhub.v1"


async def test_unexpected_exception_is_500_without_internals(gw: httpx.AsyncClient) -> None:
    r = await gw.delete("/v1/fail/CRASH")
    assert r.status_code == 500
    assert r.json()["error"]["status"] == "INTERNAL"
    assert "secret" not in r.text


async def test_not_found_from_handler(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/items/missing")
    assert r.status_code == 404
    assert r.json()["error"]["details"][0]["reason"] == "ITEM_NOT_FOUND"


async def test_unknown_path_404_and_wrong_verb_405(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/nowhere")
    assert r.status_code == 404
    assert r.json()["error"]["status"] == "NOT_FOUND"
    r = await gw.get("/v1/items/")
    assert r.status_code == 404
    r = await gw.delete("/v1/items/abc")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == 405
    assert "GET" in r.json()["error"]["message"]


# --- deadlines --------------------------------------------------------------------


async def test_grpc_timeout_exceeded_is_504(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/sleep", params={"seconds": "0.5"}, headers={"Grpc-Timeout": "50m"})
    assert r.status_code == 504
    assert r.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    r = await gw.get("/v1/sleep", params={"seconds": "0.01"}, headers={"Grpc-Timeout": "5S"})
    assert r.status_code == 200
    assert r.json() == {}


@pytest.mark.parametrize("value", ["5", "5s", "abc", "123456789S", "-1S"])
async def test_bad_grpc_timeout_is_400(gw: httpx.AsyncClient, value: str) -> None:
    r = await gw.get("/v1/sleep", headers={"Grpc-Timeout": value})
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("grpc-timeout:")


# --- server streaming -------------------------------------------------------------


async def test_ndjson_stream(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/watch", params={"count": 3})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines == [{"result": {"n": n, "color": "red"}} for n in range(3)]


async def test_ndjson_stream_mid_stream_error(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/watch", params={"count": 2, "fail_with": "UNAVAILABLE"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[:2] == [{"result": {"n": 0, "color": "red"}}, {"result": {"n": 1, "color": "red"}}]
    assert lines[2]["error"]["status"] == "UNAVAILABLE"
    assert lines[2]["error"]["code"] == 503
    assert len(lines) == 3


async def test_sse_stream_with_error_frame(gw: httpx.AsyncClient) -> None:
    r = await gw.get(
        "/v1/watch", params={"count": 2, "fail_with": "NOT_FOUND"}, headers={"Accept": "text/event-stream"}
    )
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream"
    frames = [f for f in r.text.split("\n\n") if f]
    assert all(f.startswith("data: ") for f in frames)
    data = [json.loads(f[len("data: ") :]) for f in frames]
    assert data[0] == {"result": {"n": 0, "color": "red"}}
    assert data[2]["error"]["status"] == "NOT_FOUND"


async def test_stream_delivers_items_as_they_come(gw: httpx.AsyncClient, gw_handlers: EchoHandlers) -> None:
    # The handler yields an item, then sleeps 1 s, five times: it produces for 5 s in all.
    closed = gw_handlers.streams_closed
    started = time.monotonic()
    async with gw.stream("GET", "/v1/watch", params={"count": 5, "interval": 1}) as r:
        assert r.status_code == 200
        first = await anext(r.aiter_lines())
        waited = time.monotonic() - started
        handler_still_producing = gw_handlers.streams_closed == closed
    assert json.loads(first) == {"result": {"n": 0, "color": "red"}}
    assert handler_still_producing  # the first item came while the handler was running, not after it ended
    assert waited < 4  # ...with seconds to spare (a buffered stream would answer after 5 s)
    for _ in range(500):  # leaving early cancels the handler; let it finish before the next test counts
        if gw_handlers.streams_closed > closed:
            break
        await asyncio.sleep(0.02)
    assert gw_handlers.streams_closed == closed + 1


async def test_stream_error_before_first_item_gets_real_status(gw: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/watch", params={"count": -1})
    assert r.status_code == 400
    r = await anon.get("/v1/watch", params={"count": 1})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


async def test_stream_deadline_ends_with_error(gw: httpx.AsyncClient) -> None:
    r = await gw.get("/v1/watch", params={"count": 50, "interval": 0.05}, headers={"Grpc-Timeout": "300m"})
    assert r.status_code == 200
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert 1 <= len(lines) < 50
    assert lines[-1]["error"]["status"] == "DEADLINE_EXCEEDED"


async def test_stream_client_disconnect_stops_the_handler(gw_url: str, gw_handlers: EchoHandlers) -> None:
    port = int(gw_url.rsplit(":", 1)[1])
    closed = gw_handlers.streams_closed
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/watch?count=400&interval=0.01&token=good HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readuntil(b"\n{")  # past the headers, into the first line
    writer.close()
    await writer.wait_closed()
    for _ in range(500):  # up to 10 s: generous on a loaded machine
        if gw_handlers.streams_closed > closed:
            break
        await asyncio.sleep(0.02)
    assert gw_handlers.streams_closed == closed + 1
    async with httpx.AsyncClient(base_url=gw_url) as c:
        assert (await c.get("/healthz")).status_code == 200


# --- health -----------------------------------------------------------------------


async def test_healthz_and_readyz(anon: httpx.AsyncClient, gw_readiness: Readiness) -> None:
    assert (await anon.get("/healthz")).status_code == 200
    assert (await anon.get("/readyz")).status_code == 200
    gw_readiness.ready = False
    try:
        assert (await anon.get("/readyz")).status_code == 503
        assert (await anon.get("/healthz")).status_code == 200
    finally:
        gw_readiness.ready = True
