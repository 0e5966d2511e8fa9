"""Property-based fuzzing of request decoding, for every method of every service (issue 10, "keep it from coming back").

Requests are built from the services' descriptors, so a new method or field
is fuzzed without touching this file: arbitrary Unicode (NUL, lone
surrogates, astral characters, long strings), numbers (NaN, +-Infinity,
1e400, integers past a double), Struct values nested past every limit, and
bytes that are no message at all. The properties:

* in-process: the REST codec and the gRPC decoder either produce a request
  or raise InvalidArgument, and the request rules either pass or raise it;
* against a real server, on SQLite and PostgreSQL, over REST and gRPC: the
  answer is never 5xx, INTERNAL or UNKNOWN, and a refused call wrote nothing
  for its customer (every row compared before and after).

Bounded: a fixed number of examples per test and a per-example deadline keep
the module around a minute on a loaded machine.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from google.api import annotations_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convhub.server.api.dispatch import message_class
from convhub.server.api.request_rules import check_request, is_uuid
from convhub.server.errors import InvalidArgument
from convhub.server.gateway import codec
from convhub.server.gateway.json_body import parse_json
from convhub.v1 import account_service_pb2, common_pb2, conversation_service_pb2, event_service_pb2, ingest_service_pb2
from convhub.v1 import ingest_service_pb2 as ip
from tests.conftest import Hub, Tenant, new_tenant
from tests.support import tenant_snapshot, varint

FD = FieldDescriptor
SERVICES = [
    conversation_service_pb2.DESCRIPTOR.services_by_name["ConversationService"],
    account_service_pb2.DESCRIPTOR.services_by_name["AccountService"],
    ingest_service_pb2.DESCRIPTOR.services_by_name["IngestService"],
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"],
]
METHODS: list[MethodDescriptor] = [m for s in SERVICES for m in s.methods]
# Against a real server only calls that end: a subscription (server streaming) never does.
CALLS: list[MethodDescriptor] = [m for m in METHODS if not m.server_streaming]
# Outbound sending arrives with the channels work; until then it answers UNIMPLEMENTED (501) on purpose.
UNIMPLEMENTED_OK = {"SendMessage"}
SERVER_FAULTS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}

FUZZ = settings(
    max_examples=50,
    deadline=timedelta(seconds=20),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
FAST = settings(max_examples=120, deadline=timedelta(seconds=5), database=None)


# ---------------------------------------------------------------------------
# Values


class RawNumber(str):
    """A JSON number written as is (`1e400`, `NaN`): JSON text Python's serializer would not produce."""


ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
NASTY_STRINGS = ["", "\x00", "a\x00b", "\ud800", "x\udfffy", "\U0001f600", "\U0010ffff", "\ufeff", "e\u0301"]


def text(*, surrogates: bool) -> st.SearchStrategy[str]:
    chars = ANY_CHAR if surrogates else st.characters(codec="utf-8")
    samples = NASTY_STRINGS if surrogates else [s for s in NASTY_STRINGS if not re.search("[\ud800-\udfff]", s)]
    return st.one_of(
        st.sampled_from(samples),
        st.text(chars, max_size=24),
        st.builds("".join, st.lists(st.sampled_from([*samples, "a", "é"]), max_size=6)),
        st.builds(lambda s, n: s * n, st.text(chars, min_size=1, max_size=4), st.sampled_from([70, 300, 5000])),
        st.sampled_from(["+15550001111", "+1 555 000 2222", "bob@example.com", "U1234", str(uuid.uuid4())]),
    )


NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([RawNumber("1e400"), RawNumber("-1e400"), RawNumber("1" + "0" * 400), RawNumber("NaN")]),
)


def json_values(*, surrogates: bool, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    leaf = st.one_of(st.none(), st.booleans(), NUMBERS, text(surrogates=surrogates))
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(text(surrogates=surrogates), inner, max_size=3)
        ),
        max_leaves=max_leaves,
    )


def deep(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = {"a": value} if i % 3 else [value]
    return value


STRUCT_VALUES = st.one_of(
    json_values(surrogates=True),
    st.builds(deep, st.integers(min_value=20, max_value=60)),
)


# ---------------------------------------------------------------------------
# JSON requests (REST)


def to_json(value: Any) -> str:
    """JSON text for `value`: lone surrogates become `\\ud800` escapes, RawNumbers stay as written."""
    if isinstance(value, RawNumber):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("1e400" if value > 0 else "-1e400")
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value)


def ids(known: tuple[str, ...], *, surrogates: bool) -> st.SearchStrategy[str]:
    """For an id field: a real id, a fresh UUID, or junk."""
    return st.one_of(st.sampled_from([*known, str(uuid.uuid4())]), text(surrogates=surrogates))


def json_scalar(f: FieldDescriptor, known: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    if is_uuid(f):
        return ids(known, surrogates=True)
    ct = f.cpp_type
    if ct == FD.CPPTYPE_ENUM:
        names = codec.enum_names(codec.enum_type(f)).names
        return st.one_of(st.sampled_from(names), st.integers(-3, 9), text(surrogates=True))
    if ct == FD.CPPTYPE_BOOL:
        return st.one_of(st.booleans(), st.sampled_from(["true", 1, None]))
    if ct in (FD.CPPTYPE_DOUBLE, FD.CPPTYPE_FLOAT):
        return st.one_of(NUMBERS, st.sampled_from(["NaN", "Infinity", "1e400"]))
    if ct in (FD.CPPTYPE_INT32, FD.CPPTYPE_INT64, FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64):
        return st.one_of(NUMBERS, st.integers(-1, 200).map(str), st.sampled_from([-1, 0, 1, 100, 101, 2**31]))
    if f.type == FD.TYPE_BYTES:
        return st.one_of(st.binary(max_size=16).map(lambda b: base64.b64encode(b).decode()), text(surrogates=True))
    return text(surrogates=True)


def json_message(desc: Descriptor, depth: int = 0, known: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    """A JSON object for `desc`: some of its fields, sometimes an unknown one, sometimes not an object at all."""
    name = desc.full_name
    if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"):
        return STRUCT_VALUES
    if name == "google.protobuf.FieldMask":
        return st.one_of(
            st.sampled_from(["name", "tags,metadata", "state", "addresses", "self.target"]), text(surrogates=True)
        )
    if name == "google.protobuf.Timestamp":
        return st.one_of(st.just("2024-01-01T00:00:00Z"), text(surrogates=True))
    if name.startswith("google.protobuf."):
        return json_values(surrogates=True, max_leaves=3)
    fields = {f.name: json_field(f, depth + 1, known) for f in desc.fields if depth < 4}
    if not fields:
        return st.just({})
    body = st.fixed_dictionaries({}, optional=fields)
    return st.one_of(
        body,
        body,
        body.flatmap(
            lambda d: st.dictionaries(text(surrogates=True), json_values(surrogates=True), max_size=1).map(
                lambda extra: {**d, **extra}
            )
        ),
        json_values(surrogates=True, max_leaves=2),
    )


def json_field(f: FieldDescriptor, depth: int, known: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    if codec.is_map(f):
        value_f = codec.msg_type(f).fields_by_name["value"]
        value = json_message(codec.msg_type(value_f), depth, known) if value_f.message_type else json_scalar(value_f)
        return st.dictionaries(text(surrogates=True), value, max_size=4)
    one = json_message(codec.msg_type(f), depth, known) if f.message_type is not None else json_scalar(f, known)
    if f.is_repeated:
        return st.lists(one, max_size=4) | st.builds(lambda x: [x] * 60, one)
    return one


# ---------------------------------------------------------------------------
# Proto requests (gRPC): a message built in Python, then possibly damaged on the wire.


def proto_scalar(f: FieldDescriptor, known: tuple[str, ...] = ()) -> st.SearchStrategy[Any]:
    if is_uuid(f):
        return ids(known, surrogates=False)
    ct = f.cpp_type
    if ct == FD.CPPTYPE_ENUM:
        return st.integers(-3, 9)
    if ct == FD.CPPTYPE_BOOL:
        return st.booleans()
    if ct == FD.CPPTYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if ct == FD.CPPTYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if ct == FD.CPPTYPE_INT32:
        return st.integers(-(2**31), 2**31 - 1)
    if ct == FD.CPPTYPE_UINT32:
        return st.integers(0, 2**32 - 1)
    if ct == FD.CPPTYPE_INT64:
        return st.integers(-(2**63), 2**63 - 1)
    if ct == FD.CPPTYPE_UINT64:
        return st.integers(0, 2**64 - 1)
    if f.type == FD.TYPE_BYTES:
        return st.binary(max_size=16)
    return text(surrogates=False)


@st.composite
def proto_message(draw: Any, desc: Descriptor, depth: int = 0, known: tuple[str, ...] = ()) -> Any:
    msg = message_class(desc)()
    if desc.full_name == "google.protobuf.Struct":
        msg.update(draw(st.dictionaries(text(surrogates=False), json_values(surrogates=False), max_size=3)))
        if draw(st.booleans()):
            msg.update({"deep": deep(draw(st.integers(20, 32)))})  # past the limit, within upb's
        return msg
    if depth > 4:
        return msg
    for f in desc.fields:
        if not draw(st.booleans()):
            continue
        if codec.is_map(f):
            entry = codec.msg_type(f)
            key_f, value_f = entry.fields_by_name["key"], entry.fields_by_name["value"]
            for _ in range(draw(st.integers(0, 3))):
                key = draw(proto_scalar(key_f))
                if value_f.message_type is not None:
                    getattr(msg, f.name)[key].CopyFrom(draw(proto_message(value_f.message_type, depth + 1, known)))
                else:
                    getattr(msg, f.name)[key] = draw(proto_scalar(value_f))
        elif f.message_type is not None:
            if f.is_repeated:
                for _ in range(draw(st.integers(0, 3))):
                    getattr(msg, f.name).add().CopyFrom(draw(proto_message(f.message_type, depth + 1, known)))
            else:
                getattr(msg, f.name).CopyFrom(draw(proto_message(f.message_type, depth + 1, known)))
        elif f.is_repeated:
            getattr(msg, f.name).extend(draw(st.lists(proto_scalar(f, known), max_size=4)))
        else:
            setattr(msg, f.name, draw(proto_scalar(f, known)))
    return msg


@st.composite
def wire_request(draw: Any, desc: Descriptor, known: tuple[str, ...] = ()) -> bytes:
    """Serialized request bytes, sometimes damaged: invalid UTF-8 in a string field, truncated, spliced."""
    data: bytes = draw(proto_message(desc, 0, known)).SerializeToString()
    damage = draw(st.sampled_from(["none", "none", "bad text", "truncate", "splice"]))
    strings = [f.number for f in desc.fields if f.type == FD.TYPE_STRING and not f.is_repeated]
    if damage == "bad text" and strings:
        bad = draw(st.sampled_from([b"\xed\xa0\x80", b"\xff", b"a\xc3", b"\xf4\x90\x80\x80"]))
        data += varint(draw(st.sampled_from(strings)) << 3 | 2) + varint(len(bad)) + bad
    elif damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "splice":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
    return data


# ---------------------------------------------------------------------------
# In-process properties: decoding either yields a request or names what is wrong.


@FAST
@given(st.data())
def test_rest_codec_decodes_or_names_the_field(data: st.DataObject) -> None:
    md = data.draw(st.sampled_from(METHODS), label="method")
    body = to_json(data.draw(json_message(md.input_type), label="body")).encode("utf-8", "surrogatepass")
    request = message_class(md.input_type)()
    try:
        codec.decode_into(request, parse_json(body))
        check_request(request)
    except InvalidArgument as exc:
        assert exc.violations and exc.violations[0].field
        exc.to_status().SerializeToString()  # the error itself always encodes
        return
    codec.encode_message(request)


@FAST
@given(st.data())
def test_grpc_decoding_yields_a_request_or_invalid_argument(data: st.DataObject) -> None:
    from convhub.server.api.dispatch import collect_methods
    from convhub.server.api.grpc_transport import decode_request

    md = data.draw(st.sampled_from(METHODS), label="method")
    payload = data.draw(wire_request(md.input_type), label="payload")
    method = collect_methods([(md.containing_service, _AnyHandlers())])[f"/{md.containing_service.full_name}/{md.name}"]
    try:
        check_request(decode_request(method, payload))
    except InvalidArgument as exc:
        exc.to_status().SerializeToString()


class _AnyHandlers:
    """Stands in for every handler: the in-process tests only decode."""

    def __getattr__(self, name: str) -> Any:
        if any(m.name == name and m.server_streaming for m in METHODS):

            async def stream(request: Any, caller: Any) -> Any:
                raise AssertionError("not called")
                yield  # an async generator, as streaming handlers are

            return stream

        def handler(request: Any, caller: Any) -> Any:
            raise AssertionError("not called")

        return handler


# ---------------------------------------------------------------------------
# Against the real server.


@pytest.fixture
def target(hub: Hub) -> Iterator[tuple[Hub, Tenant, str]]:
    """A tenant with one conversation, so that some fuzzed ids are real."""
    tenant = new_tenant(hub)
    with hub.channel() as ch:
        stub = ch.unary_unary(
            "/convhub.v1.IngestService/IngestMessage",
            request_serializer=ip.IngestMessageRequest.SerializeToString,
            response_deserializer=ip.IngestMessageResponse.FromString,
        )
        response = stub(
            ip.IngestMessageRequest(
                channel=common_pb2.CONVERSATION_TYPE_MESSAGE,
                self=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15559990000"),
                peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550001111"),
                text="hello",
            ),
            metadata=tenant.metadata,
            timeout=10,
        )
    yield hub, tenant, response.conversation.id


def http_bindings(md: MethodDescriptor) -> list[tuple[str, str, str]]:
    """(verb, path template, body) of every google.api.http binding of a method."""
    rule = md.GetOptions().Extensions[annotations_pb2.http]
    out = []
    for r in [rule, *rule.additional_bindings]:
        verb = r.WhichOneof("pattern")
        if verb is not None and verb != "custom":
            out.append((verb.upper(), getattr(r, verb), r.body))
    return out


BINDINGS = [(md, *b) for md in CALLS for b in http_bindings(md)]


def path_segment(conversation_id: str) -> st.SearchStrategy[str]:
    junk = text(surrogates=True).filter(bool).map(lambda s: quote(s[:800].encode("utf-8", "surrogatepass"), safe=""))
    return st.one_of(st.just(conversation_id), st.just(str(uuid.uuid4())), junk)


@FUZZ
@given(st.data())
def test_rest_never_fails_on_the_server_nor_half_writes(target: tuple[Hub, Tenant, str], data: st.DataObject) -> None:
    hub, tenant, conversation_id = target
    known = (conversation_id,)
    if hub.http_base is None:
        pytest.skip("no REST port")
    md, verb, template, body_field = data.draw(st.sampled_from(BINDINGS), label="binding")
    path = re.sub(r"\{[^}]*\}", lambda _: data.draw(path_segment(conversation_id), label="segment"), template)
    content = b""
    if body_field == "*":
        body = data.draw(json_message(md.input_type, 0, known), label="body")
        content = to_json(body).encode("utf-8", "surrogatepass")
    elif body_field:
        body = data.draw(json_field(md.input_type.fields_by_name[body_field], 0, known), label="body")
        content = to_json(body).encode("utf-8", "surrogatepass")
    scalars = [f.name for f in md.input_type.fields if f.message_type is None]
    values = text(surrogates=True).map(lambda v: v[:800])  # a URL stays under httpx's 64 KiB
    query = data.draw(st.lists(st.tuples(st.sampled_from(scalars or ["x"]), values), max_size=3))
    qs = "&".join(f"{quote(k)}={quote(v.encode('utf-8', 'surrogatepass'), safe='')}" for k, v in query)
    before = tenant_snapshot(hub.engine, tenant.customer_id)
    with httpx.Client(base_url=hub.http_base, timeout=30) as client:
        r = client.request(
            verb,
            path + ("?" + qs if qs else ""),
            content=content or None,
            headers={"authorization": f"Bearer {tenant.token}", "content-type": "application/json"},
        )
    assert r.status_code < 500 or (r.status_code == 501 and md.name in UNIMPLEMENTED_OK), (md.name, r.text[:500])
    assert r.headers["content-type"].startswith("application/")
    r.json()  # every answer is JSON, errors included
    if r.status_code >= 400:
        assert tenant_snapshot(hub.engine, tenant.customer_id) == before, (md.name, r.text[:500])


@FUZZ
@given(st.data())
def test_grpc_never_fails_on_the_server_nor_half_writes(target: tuple[Hub, Tenant, str], data: st.DataObject) -> None:
    hub, tenant, conversation_id = target
    md = data.draw(st.sampled_from(CALLS), label="method")
    payload = data.draw(wire_request(md.input_type, (conversation_id,)), label="payload")
    before = tenant_snapshot(hub.engine, tenant.customer_id)
    with hub.channel() as ch:
        call = ch.unary_unary(f"/{md.containing_service.full_name}/{md.name}")
        try:
            call(payload, metadata=tenant.metadata, timeout=30)
            return
        except grpc.RpcError as err:
            code = err.code()  # type: ignore[attr-defined]
            details = err.details()  # type: ignore[attr-defined]
    assert code not in SERVER_FAULTS, (md.name, code, details)
    if code == grpc.StatusCode.UNIMPLEMENTED:
        assert md.name in UNIMPLEMENTED_OK, (md.name, details)
    assert tenant_snapshot(hub.engine, tenant.customer_id) == before, (md.name, code, details)
