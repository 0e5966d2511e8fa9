"""The compiled codec against json_format (the reference), and the route templates, without a server."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from gwsupport import echo_pb2

from convhub.server.errors import InvalidArgument
from convhub.server.gateway import codec
from convhub.server.gateway.routes import RouteTable, TemplateError, parse_template

FD = FieldDescriptor


def _random_scalar(f: FieldDescriptor, rnd: random.Random) -> Any:
    ct = f.cpp_type
    if ct == FD.CPPTYPE_INT32:
        return rnd.choice([0, 1, -1, 2**31 - 1, -(2**31), rnd.randint(-1000, 1000)])
    if ct == FD.CPPTYPE_UINT32:
        return rnd.choice([0, 2**32 - 1, rnd.randint(0, 1000)])
    if ct == FD.CPPTYPE_INT64:
        return rnd.choice([0, 2**63 - 1, -(2**63), 2**53 + 1, rnd.randint(-(10**12), 10**12)])
    if ct == FD.CPPTYPE_UINT64:
        return rnd.choice([0, 2**64 - 1, rnd.randint(0, 10**12)])
    if ct == FD.CPPTYPE_DOUBLE:
        return rnd.choice([0.0, 1.5, -2.25, 1e300, math.inf, -math.inf, rnd.random()])
    if ct == FD.CPPTYPE_FLOAT:
        return rnd.choice([0.0, 1.5, 0.1, -3.0e38, math.inf])
    if ct == FD.CPPTYPE_BOOL:
        return rnd.random() < 0.5
    if ct == FD.CPPTYPE_ENUM:
        return rnd.choice([v.number for v in f.enum_type.values])
    if f.type == FD.TYPE_BYTES:
        return bytes(rnd.randrange(256) for _ in range(rnd.randrange(6)))
    return rnd.choice(["", "a", "héllo ✓", "x" * 5, 'quote"back\\slash'])


def fill(msg: Message, rnd: random.Random, depth: int = 0) -> Message:
    """Set a random subset of fields of `msg` to random values (well-known types included)."""
    desc: Descriptor = msg.DESCRIPTOR
    name = desc.full_name
    if name == "google.protobuf.Timestamp":
        msg.FromSeconds(rnd.randint(0, 2_000_000_000))  # type: ignore[attr-defined]
        msg.nanos = rnd.choice([0, 500_000_000, 123_456_789])  # type: ignore[attr-defined]
        return msg
    if name == "google.protobuf.Duration":
        msg.seconds = rnd.randint(-100, 100)  # type: ignore[attr-defined]
        return msg
    if name == "google.protobuf.FieldMask":
        msg.paths.extend(rnd.choice([[], ["a"], ["display_name", "inner.label"]]))  # type: ignore[attr-defined]
        return msg
    if name == "google.protobuf.Struct":
        json_format.ParseDict({"a": 1, "b": [True, None, "s", {"c": 2.5}]}, msg)
        return msg
    if name == "google.protobuf.Value":
        json_format.ParseDict(rnd.choice([None, 1.5, "s", True, [1, "a"], {"k": "v"}]), msg)
        return msg
    for f in desc.fields:
        if rnd.random() < 0.35 or depth > 2:
            continue
        if f.containing_oneof is not None and msg.WhichOneof(f.containing_oneof.name) is not None:
            continue
        if codec.is_map(f):
            key_f = f.message_type.fields_by_name["key"]
            val_f = f.message_type.fields_by_name["value"]
            target = getattr(msg, f.name)
            for _ in range(rnd.randrange(3)):
                key = _random_scalar(key_f, rnd)
                if val_f.cpp_type == FD.CPPTYPE_MESSAGE:
                    fill(target[key], rnd, depth + 1)
                else:
                    target[key] = _random_scalar(val_f, rnd)
        elif f.cpp_type == FD.CPPTYPE_MESSAGE:
            if f.is_repeated:
                for _ in range(rnd.randrange(3)):
                    fill(getattr(msg, f.name).add(), rnd, depth + 1)
            else:
                child = getattr(msg, f.name)
                child.SetInParent()
                fill(child, rnd, depth + 1)
        elif f.is_repeated:
            getattr(msg, f.name).extend(_random_scalar(f, rnd) for _ in range(rnd.randrange(3)))
        else:
            setattr(msg, f.name, _random_scalar(f, rnd))
    return msg


def normalize(desc: Descriptor, obj: dict[str, Any], *, enums: bool) -> dict[str, Any]:
    """Drop INPUT_ONLY keys and (with `enums`) undo the short-name enum rule, to compare with json_format."""
    out = dict(obj)
    for f in desc.fields:
        if f.name not in out:
            continue
        if codec.is_input_only(f):
            del out[f.name]
            continue
        value = out[f.name]
        if codec.is_map(f):
            val_f = f.message_type.fields_by_name["value"]
            if val_f.cpp_type == FD.CPPTYPE_MESSAGE and val_f.message_type.full_name not in codec.WELL_KNOWN:
                out[f.name] = {k: normalize(val_f.message_type, v, enums=enums) for k, v in value.items()}
        elif f.cpp_type == FD.CPPTYPE_ENUM and enums:
            table = codec.enum_names(f.enum_type).parse_table
            out[f.name] = [table[v] for v in value] if f.is_repeated else table[value]
        elif f.cpp_type == FD.CPPTYPE_MESSAGE and f.message_type.full_name not in codec.WELL_KNOWN:
            if f.is_repeated:
                out[f.name] = [normalize(f.message_type, v, enums=enums) for v in value]
            else:
                out[f.name] = normalize(f.message_type, value, enums=enums)
    return out


def strip_input_only(msg: Message) -> Message:
    """Clear INPUT_ONLY fields everywhere in `msg` (the codec never writes them)."""
    for f, value in msg.ListFields():
        if codec.is_input_only(f):
            msg.ClearField(f.name)
        elif f.cpp_type == FD.CPPTYPE_MESSAGE and not codec.is_map(f):
            for child in value if f.is_repeated else [value]:
                strip_input_only(child)
        elif codec.is_map(f) and f.message_type.fields_by_name["value"].cpp_type == FD.CPPTYPE_MESSAGE:
            for child in value.values():
                strip_input_only(child)
    return msg


MESSAGES = [echo_pb2.Item, echo_pb2.ListItemsRequest, echo_pb2.EchoResponse, echo_pb2.Tick]


@pytest.mark.parametrize("seed", range(60))
def test_encoder_matches_json_format(seed: int) -> None:
    rnd = random.Random(seed)
    cls = MESSAGES[seed % len(MESSAGES)]
    msg = fill(cls(), rnd)
    expected = json_format.MessageToDict(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        use_integers_for_enums=True,
    )
    actual = codec.encode_message(msg)
    if cls is echo_pb2.Item:
        assert "secrets" not in actual
    assert normalize(cls.DESCRIPTOR, actual, enums=True) == normalize(cls.DESCRIPTOR, expected, enums=False)


@pytest.mark.parametrize("seed", range(60))
def test_decoder_round_trips_both_spellings(seed: int) -> None:
    rnd = random.Random(1000 + seed)
    cls = MESSAGES[seed % len(MESSAGES)]
    msg = fill(cls(), rnd)
    # lowerCamelCase canonical proto3 JSON, full enum names
    camel = json_format.MessageToDict(msg)
    got = cls()
    codec.decode_into(got, camel)
    assert got == msg
    # our own snake_case output with short enum names (minus INPUT_ONLY fields, which are never written)
    strip_input_only(msg)
    got = cls()
    codec.decode_into(got, codec.encode_message(msg))
    assert got == msg


def test_non_finite_floats() -> None:
    item = echo_pb2.Item(ratio=math.nan, weight=-math.inf)
    out = codec.encode_message(item)
    assert (out["ratio"], out["weight"]) == ("NaN", "-Infinity")
    back = echo_pb2.Item()
    codec.decode_into(back, {"ratio": "NaN", "weight": "-Infinity"})
    assert math.isnan(back.ratio) and back.weight == -math.inf
    with pytest.raises(InvalidArgument):
        codec.decode_into(echo_pb2.Item(), {"ratio": math.inf})


def test_enum_short_name_rule() -> None:
    names = codec.enum_names(echo_pb2.Color.DESCRIPTOR)
    assert names.names == ["unspecified", "red", "dark_blue"]
    from convhub.v1 import common_pb2, conversation_pb2, message_pb2

    assert codec.enum_names(common_pb2.ConversationType.DESCRIPTOR).out[1] == "message"
    assert codec.enum_names(conversation_pb2.ConversationState.DESCRIPTOR).out[1] == "open"
    assert codec.enum_names(message_pb2.MessageDirection.DESCRIPTOR).out[1] == "incoming"


def test_body_field_mask() -> None:
    data = {"displayName": "x", "inner": {"label": "l"}, "metadata": {"a": 1}, "labels": {"k": "v"}, "tm_create": "t"}
    paths = codec.body_field_mask(echo_pb2.Item.DESCRIPTOR, data)
    assert paths == ["display_name", "inner.label", "metadata", "labels", "tm_create"]


# --- templates and matching ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["v1/x", "/v1/{a", "/v1/{a.}", "/v1/{a=**/b}", "/v1/**/x", "/v1/{a}x", "/v1/x:", "/v1//x", "/v1/{1a}"],
)
def test_bad_templates_fail_at_start_up(text: str) -> None:
    with pytest.raises(TemplateError):
        parse_template(text)


def test_template_parsing() -> None:
    t = parse_template("/v1/{name=shelves/*/books/*}/x/{c.d}:verb")
    assert t.verb == "verb"
    assert [(v.field_path, v.start, v.end) for v in t.variables] == [(("name",), 1, 5), (("c", "d"), 6, 7)]
    deep = parse_template("/v1/{path=files/**}")
    assert deep.variables[0].end is None


def test_route_table_prefers_literals_and_reports_allowed_methods(gw_dispatcher: Any) -> None:
    from convhub.server.gateway.routes import Match, build_route_table

    table: RouteTable = build_route_table(gw_dispatcher.methods.values())
    special = table.match("GET", "/v1/items/special")
    assert isinstance(special, Match) and special.binding.method.descriptor.name == "GetSpecialItem"
    by_id = table.match("GET", "/v1/items/x%2Fy")
    assert isinstance(by_id, Match) and by_id.values == ((("id",), "x/y"),)
    verb = table.match("POST", "/v1/items:ingest")
    assert isinstance(verb, Match) and verb.binding.method.descriptor.name == "Ingest"
    wrong = table.match("DELETE", "/v1/items/abc")
    assert isinstance(wrong, dict) and set(wrong) == {"GET", "PUT", "PATCH"}
    assert table.match("GET", "/v2/none") is None
