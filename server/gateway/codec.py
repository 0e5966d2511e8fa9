"""Proto <-> JSON for the REST shim, compiled once per message type.

Why not call `json_format` per request: the wire rules differ from canonical
proto3 JSON in one place (enums travel as lower-case short names, the way
VoIPBIN clients expect: `CONVERSATION_TYPE_MESSAGE` <-> `"message"`), and a
per-request descriptor walk is the single biggest cost of a REST call. So the
first request for a message type compiles a small plan (field name, converter,
presence rule) from its descriptor, and every later message of that type only
runs the plan. Everything else follows proto3 JSON as `json_format` does with
`preserving_proto_field_name=True, always_print_fields_with_no_presence=True`
(a parity test holds it to that): snake_case names out, snake_case and
lowerCamelCase in, int64 as strings, RFC 3339 timestamps, well-known types in
their JSON forms (the well-known types themselves are handed to `json_format`
where it is exact already).

One more contract rule applied generically: fields marked
`(google.api.field_behavior) = INPUT_ONLY` (secrets such as account
credentials) are accepted on input and never written on output.

Bad input raises `InvalidArgument` naming the field path (`item.inner.color`,
`item.tags[2]`), so a client sees which field to fix.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Iterable
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.internal import type_checkers
from google.protobuf.message import Message

from convhub.server.api.request_rules import MAX_DEPTH, check_number, check_text, text_problem
from convhub.server.errors import InvalidArgument
from convhub.server.gateway.voipbin_names import (
    INPUT_ALIASES,
    INPUT_FIXUPS,
    NIL_UUID,
    NIL_UUID_WHEN_EMPTY,
    NULL_WHEN_UNSET,
    OUTPUT_ALIASES,
    OUTPUT_CONSTANTS,
    OUTPUT_FIXUPS,
)

FD = FieldDescriptor
Encoder = Callable[[Any], Any]
JsonDecoder = Callable[[Any, Any, str], None]  # (message, json value, field path)
StringParser = Callable[[str, str], Any]  # (text, field path) -> python value

_INT_RANGES: dict[int, tuple[int, int]] = {
    FD.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FD.CPPTYPE_UINT32: (0, 2**32 - 1),
    FD.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FD.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_INT_RE = re.compile(r"-?[0-9]+")
_FLOAT_RE = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_FLOAT_MAX = type_checkers._FLOAT_MAX  # type: ignore[attr-defined]
_WRAPPERS = {
    "google.protobuf." + n
    for n in (
        "DoubleValue",
        "FloatValue",
        "Int64Value",
        "UInt64Value",
        "Int32Value",
        "UInt32Value",
        "BoolValue",
        "StringValue",
        "BytesValue",
    )
}
WELL_KNOWN = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
    "google.protobuf.Struct",
    "google.protobuf.Value",
    "google.protobuf.ListValue",
    "google.protobuf.Any",
    "google.protobuf.Empty",
    *_WRAPPERS,
}


def msg_type(f: FieldDescriptor) -> Descriptor:
    """The message type of a message (or map) field; typed non-optional for the callers that know it is one."""
    d = f.message_type
    assert d is not None, f.full_name
    return d


def enum_type(f: FieldDescriptor) -> EnumDescriptor:
    d = f.enum_type
    assert d is not None, f.full_name
    return d


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def field_behaviors(f: FieldDescriptor) -> set[int]:
    """The field's `google.api.field_behavior` values (REQUIRED, OUTPUT_ONLY, INPUT_ONLY, ...)."""
    opts = f.GetOptions()
    return set(opts.Extensions[field_behavior_pb2.field_behavior])


def is_input_only(f: FieldDescriptor) -> bool:
    return field_behavior_pb2.INPUT_ONLY in field_behaviors(f)


# ---------------------------------------------------------------------------
# Enums: one generic naming rule for every enum.


def _upper_snake(camel: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", camel).upper()


class EnumNames:
    """Wire names of one enum: value name minus the `ENUM_NAME_` prefix, lower-cased.

    `ConversationType.CONVERSATION_TYPE_MESSAGE` -> `"message"`. Input accepts that
    short form, the full value name (any case) or the number; numbers the enum does
    not define are rejected rather than passed on to handlers.
    """

    def __init__(self, enum: EnumDescriptor) -> None:
        prefix = _upper_snake(enum.name) + "_"
        self.full_name = enum.full_name
        self.out: dict[int, str] = {}
        self.parse_table: dict[str, int] = {}
        shorts: dict[str, int] = {}
        for v in enum.values:
            short = v.name[len(prefix) :] if v.name.startswith(prefix) and len(v.name) > len(prefix) else v.name
            shorts.setdefault(short.lower(), v.number)
        collisions = len(shorts) != len({v.name for v in enum.values})
        for v in enum.values:
            short = v.name[len(prefix) :] if v.name.startswith(prefix) and len(v.name) > len(prefix) else v.name
            name = v.name.lower() if collisions else short.lower()
            self.out.setdefault(v.number, name)
            self.parse_table.setdefault(name, v.number)
            self.parse_table.setdefault(v.name.lower(), v.number)
        self.names = list(dict.fromkeys(self.out.values()))

    def parse(self, value: Any, path: str) -> int:
        if isinstance(value, str):
            number = self.parse_table.get(value.lower())
            if number is None:
                number = int_text(value)
                if number not in self.out:
                    number = None
            if number is not None:
                return number
        elif isinstance(value, int) and not isinstance(value, bool) and value in self.out:
            return value
        raise InvalidArgument(path, f"invalid value {value!r}: expected one of {', '.join(self.names)}")


_ENUMS: dict[str, EnumNames] = {}


def enum_names(enum: EnumDescriptor) -> EnumNames:
    names = _ENUMS.get(enum.full_name)
    if names is None:
        names = _ENUMS[enum.full_name] = EnumNames(enum)
    return names


# ---------------------------------------------------------------------------
# Encoding: message -> JSON-ready dict.


def _double(v: float) -> Any:
    if math.isfinite(v):
        return v
    if math.isnan(v):
        return "NaN"
    return "Infinity" if v > 0 else "-Infinity"


def _float(v: float) -> Any:
    if math.isfinite(v):
        return type_checkers.ToShortestFloat(v)
    return _double(v)


def _bytes(v: bytes) -> str:
    return base64.b64encode(v).decode("ascii")


def _value_json(v: Any) -> Any:
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return _struct_json(v.struct_value)
    if kind == "list_value":
        return [_value_json(x) for x in v.list_value.values]
    if kind == "number_value":
        n = v.number_value
        if not math.isfinite(n):
            raise ValueError("Value.number_value is not finite")
        return n
    return getattr(v, kind)


def _struct_json(s: Any) -> dict[str, Any]:
    return {k: _value_json(x) for k, x in s.fields.items()}


def _scalar_encoder(f: FieldDescriptor) -> Encoder | None:
    """Converter for one non-message value of field `f`; None means "use as is"."""
    ct = f.cpp_type
    if ct == FD.CPPTYPE_ENUM:
        if enum_type(f).full_name == "google.protobuf.NullValue":
            return lambda v: None
        out = enum_names(enum_type(f)).out
        return lambda v: out.get(v, v)
    if ct in (FD.CPPTYPE_INT64, FD.CPPTYPE_UINT64):
        return str
    if ct == FD.CPPTYPE_DOUBLE:
        return _double
    if ct == FD.CPPTYPE_FLOAT:
        return _float
    if f.type == FD.TYPE_BYTES:
        return _bytes
    return None


def _wkt_encoder(name: str, desc: Descriptor) -> Encoder | None:
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"):
        return lambda m: m.ToJsonString()
    if name == "google.protobuf.Struct":
        return _struct_json
    if name == "google.protobuf.Value":
        return _value_json
    if name == "google.protobuf.ListValue":
        return lambda m: [_value_json(x) for x in m.values]
    if name == "google.protobuf.Empty":
        return lambda m: {}
    if name == "google.protobuf.Any":
        return lambda m: json_format.MessageToDict(m, preserving_proto_field_name=True)
    if name in _WRAPPERS:
        conv = _scalar_encoder(desc.fields_by_name["value"])
        if conv is None:
            return lambda m: m.value
        return lambda m: conv(m.value)
    return None


_ENCODERS: dict[str, Encoder] = {}


def message_encoder(desc: Descriptor) -> Encoder:
    """The compiled `message -> dict` function for a message type (cached; safe for recursive types)."""
    enc = _ENCODERS.get(desc.full_name)
    if enc is not None:
        return enc
    wkt = _wkt_encoder(desc.full_name, desc)
    if wkt is not None:
        _ENCODERS[desc.full_name] = wkt
        return wkt
    plan: list[tuple[str, Encoder | None, bool]] = []
    nulls: list[str] = []  # unset fields written as null rather than left out (VoIPBIN's tm_delete)
    aliases = OUTPUT_ALIASES.get(desc.full_name, ())
    constants = dict(OUTPUT_CONSTANTS.get(desc.full_name, ()))
    fixup = OUTPUT_FIXUPS.get(desc.full_name)

    def encode(msg: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, conv, presence in plan:
            if presence and not msg.HasField(name):
                continue
            v = getattr(msg, name)
            out[name] = v if conv is None else conv(v)
        for name in nulls:
            out.setdefault(name, None)
        for alias, source in aliases:
            out[alias] = out.get(source)
        out.update(constants)
        if fixup is not None:
            fixup(msg, out)
        return out

    _ENCODERS[desc.full_name] = encode  # before compiling fields: a field may refer back to this type
    for f in desc.fields:
        if is_input_only(f):
            continue
        presence = f.has_presence and not f.is_repeated
        conv = field_encoder(f)
        if presence and f.name in NULL_WHEN_UNSET:
            nulls.append(f.name)
        if f.cpp_type == FD.CPPTYPE_STRING and not f.is_repeated and f.name in NIL_UUID_WHEN_EMPTY:
            conv = _nil_uuid_when_empty
        plan.append((f.name, conv, presence))
    return encode


def _nil_uuid_when_empty(v: str) -> str:
    return v or NIL_UUID


def _single_encoder(f: FieldDescriptor) -> Encoder | None:
    if f.cpp_type == FD.CPPTYPE_MESSAGE:
        return message_encoder(msg_type(f))
    return _scalar_encoder(f)


def field_encoder(f: FieldDescriptor) -> Encoder | None:
    """Converter for a whole field value (a scalar, a repeated container or a map)."""
    if is_map(f):
        key_f = msg_type(f).fields_by_name["key"]
        val = _single_encoder(msg_type(f).fields_by_name["value"])
        if key_f.cpp_type == FD.CPPTYPE_BOOL:
            key: Encoder = lambda k: "true" if k else "false"  # noqa: E731
        else:
            key = str
        if val is None:
            return lambda m: {key(k): v for k, v in m.items()}
        return lambda m: {key(k): val(v) for k, v in m.items()}
    one = _single_encoder(f)
    if f.is_repeated:
        if one is None:
            return list
        return lambda vs: [one(v) for v in vs]
    return one


def encode_message(msg: Message) -> dict[str, Any]:
    result: dict[str, Any] = message_encoder(msg.DESCRIPTOR)(msg)  # type: ignore[arg-type]
    return result


# ---------------------------------------------------------------------------
# Decoding: JSON value -> message, with the field path in every error.


def int_text(v: str) -> int | None:
    """The integer a decimal numeral names, or None when `v` is not one.

    A numeral longer than any 64-bit integer is out of every range anyway: it maps
    to 2**64 (with its sign) without `int()`, which refuses past 4300 digits.
    """
    if not _INT_RE.fullmatch(v):
        return None
    sign = -1 if v.startswith("-") else 1
    digits = v.lstrip("-").lstrip("0") or "0"
    return sign * (2**64 if len(digits) > 20 else int(digits))


def _int_parser(ct: int, from_string: bool) -> StringParser:
    lo, hi = _INT_RANGES[ct]

    def parse(v: Any, path: str) -> int:
        if isinstance(v, str):
            parsed = int_text(v)
            if parsed is not None:
                n = parsed
            elif not from_string and _FLOAT_RE.fullmatch(v) and float(v).is_integer():
                n = int(float(v))
            else:
                raise InvalidArgument(path, f"invalid integer {v!r}")
        elif isinstance(v, bool):
            raise InvalidArgument(path, f"invalid integer {v!r}")
        elif isinstance(v, int):
            n = v
        elif isinstance(v, float) and v.is_integer():
            n = int(v)
        else:
            raise InvalidArgument(path, f"invalid integer {v!r}")
        if not lo <= n <= hi:
            raise InvalidArgument(path, f"integer {n} out of range [{lo}, {hi}]")
        return n

    return parse


def _float_parser(ct: int) -> StringParser:
    def parse(v: Any, path: str) -> float:
        if isinstance(v, str):
            if v == "NaN":
                return math.nan
            if v == "Infinity":
                return math.inf
            if v == "-Infinity":
                return -math.inf
            if not _FLOAT_RE.fullmatch(v):
                raise InvalidArgument(path, f"invalid number {v!r}")
            x = float(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            try:
                x = float(v)
            except OverflowError:  # an integer literal past the largest double
                raise InvalidArgument(path, "number out of range") from None
        else:
            raise InvalidArgument(path, f"invalid number {v!r}")
        if not math.isfinite(x) and not isinstance(v, str):
            raise InvalidArgument(path, "use the strings NaN, Infinity or -Infinity")
        if ct == FD.CPPTYPE_FLOAT and math.isfinite(x) and abs(x) > _FLOAT_MAX:
            raise InvalidArgument(path, f"number {v!r} out of range for a float")
        if math.isinf(x) and isinstance(v, str) and v not in ("Infinity", "-Infinity"):
            raise InvalidArgument(path, f"number {v!r} out of range")
        return x

    return parse


def _bool_json(v: Any, path: str) -> bool:
    if isinstance(v, bool):
        return v
    raise InvalidArgument(path, f"invalid boolean {v!r}: expected true or false")


_BOOL_STRINGS = {"true": True, "false": False, "1": True, "0": False}


def _bool_string(v: Any, path: str) -> bool:
    b = _BOOL_STRINGS.get(v.lower()) if isinstance(v, str) else None
    if b is None:
        raise InvalidArgument(path, f"invalid boolean {v!r}: expected true or false")
    return b


def _string_json(v: Any, path: str) -> str:
    if isinstance(v, str):
        # Before it reaches a message: upb cannot hold a lone surrogate (`"\ud800"` in JSON).
        return check_text(path, v)
    raise InvalidArgument(path, f"invalid string {v!r}")


def _string_key(v: str, path: str) -> str:
    """A string map key (JSON object keys are always strings): the text rule, said of the key."""
    problem = text_problem(v)
    if problem is not None:
        raise InvalidArgument(path, f"key {problem}")
    return v


def _bytes_parser(v: Any, path: str) -> bytes:
    if isinstance(v, str):
        s = v.replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
        except (binascii.Error, ValueError):
            pass
    raise InvalidArgument(path, "invalid base64 bytes")


def scalar_parser(f: FieldDescriptor, *, from_string: bool) -> StringParser:
    """Parser for one non-message value of `f`, from JSON (`from_string=False`) or a path/query string."""
    ct = f.cpp_type
    if ct in _INT_RANGES:
        return _int_parser(ct, from_string)
    if ct in (FD.CPPTYPE_DOUBLE, FD.CPPTYPE_FLOAT):
        return _float_parser(ct)
    if ct == FD.CPPTYPE_BOOL:
        return _bool_string if from_string else _bool_json
    if ct == FD.CPPTYPE_ENUM:
        return enum_names(enum_type(f)).parse
    if f.type == FD.TYPE_BYTES:
        return _bytes_parser
    return _string_json


def parse_field_mask(value: Any, path: str) -> list[str]:
    """A FieldMask from its JSON string: comma-separated paths, snake_case or lowerCamelCase."""
    if not isinstance(value, str):
        raise InvalidArgument(path, "expected a comma-separated string of field paths")
    out = []
    for p in value.split(","):
        p = p.strip()
        if not p:
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", p):
            raise InvalidArgument(path, f"invalid field path {p!r}")
        out.append(re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), p))
    return out


def check_json_value(v: Any, path: str, depth: int = 0) -> None:
    """JSON bound for a Struct/Value/ListValue/Any: storable text, finite numbers, at most MAX_DEPTH levels.

    Checked here, with the field path, because `json_format` would stop at the first
    lone surrogate or huge integer with an exception of its own, not naming the field.
    """
    if isinstance(v, str):
        check_text(path, v)
    elif isinstance(v, float):
        check_number(path, v)
    elif isinstance(v, int) and not isinstance(v, bool):
        try:
            float(v)
        except OverflowError:
            raise InvalidArgument(path, "number out of range") from None
    elif isinstance(v, dict):
        if depth >= MAX_DEPTH:
            raise InvalidArgument(path, f"nested deeper than {MAX_DEPTH} levels")
        for key, x in v.items():
            problem = text_problem(key)
            if problem is not None:
                raise InvalidArgument(f"{path}[{key[:64]}]", f"key {problem}")
            check_json_value(x, join(path, key), depth + 1)
    elif isinstance(v, list):
        if depth >= MAX_DEPTH:
            raise InvalidArgument(path, f"nested deeper than {MAX_DEPTH} levels")
        for i, x in enumerate(v):
            check_json_value(x, f"{path}[{i}]", depth + 1)


def _wkt_decoder(name: str, desc: Descriptor) -> JsonDecoder | None:
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        what = "an RFC 3339 timestamp" if name.endswith("Timestamp") else "a duration such as '1.5s'"

        def time_like(msg: Any, v: Any, path: str) -> None:
            if not isinstance(v, str):
                raise InvalidArgument(path, f"expected {what}")
            try:
                msg.FromJsonString(v)
            except (ValueError, TypeError, OverflowError) as exc:
                raise InvalidArgument(path, f"expected {what}: {exc}") from None

        return time_like
    if name == "google.protobuf.FieldMask":

        def mask(msg: Any, v: Any, path: str) -> None:
            msg.SetInParent()
            del msg.paths[:]
            msg.paths.extend(parse_field_mask(v, path))

        return mask
    if name in ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue", "google.protobuf.Any"):
        expect = {"google.protobuf.Struct": dict, "google.protobuf.ListValue": list}.get(name)

        def generic(msg: Any, v: Any, path: str) -> None:
            if expect is not None and not isinstance(v, expect):
                raise InvalidArgument(path, f"expected a JSON {'object' if expect is dict else 'array'}")
            check_json_value(v, path)
            try:
                json_format.ParseDict(v, msg)
            except (json_format.ParseError, ValueError, TypeError) as exc:
                raise InvalidArgument(path, str(exc)) from None

        return generic
    if name == "google.protobuf.Empty":

        def empty(msg: Any, v: Any, path: str) -> None:
            if not isinstance(v, dict) or v:
                raise InvalidArgument(path, "expected an empty JSON object")
            msg.SetInParent()

        return empty
    if name in _WRAPPERS:
        parse = scalar_parser(desc.fields_by_name["value"], from_string=False)

        def wrapper(msg: Any, v: Any, path: str) -> None:
            msg.value = parse(v, path)

        return wrapper
    return None


_DECODERS: dict[str, JsonDecoder] = {}


def message_decoder(desc: Descriptor) -> JsonDecoder:
    """The compiled `(message, json, path)` filler for a message type (cached; recursion-safe)."""
    dec = _DECODERS.get(desc.full_name)
    if dec is not None:
        return dec
    wkt = _wkt_decoder(desc.full_name, desc)
    if wkt is not None:
        _DECODERS[desc.full_name] = wkt
        return wkt
    table: dict[str, tuple[str, JsonDecoder, str | None, bool]] = {}
    fixup = INPUT_FIXUPS.get(desc.full_name)

    def decode(msg: Any, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise InvalidArgument(path or "body", "expected a JSON object")
        if fixup is not None:
            data = fixup(data, path)
        msg.SetInParent()
        seen: set[str] = set()
        oneofs: dict[str, str] = {}
        for key, value in data.items():
            entry = table.get(key)
            if entry is None:
                raise InvalidArgument(join(path, key) if key else f'{path}[""]', "unknown field")
            name, setter, oneof, null_ok = entry
            fpath = join(path, name)
            if name in seen:
                raise InvalidArgument(fpath, "given twice (snake_case and lowerCamelCase)")
            seen.add(name)
            if value is None and not null_ok:
                continue
            if oneof is not None:
                if oneof in oneofs:
                    raise InvalidArgument(
                        fpath, f"only one of the oneof {oneof!r} may be set (also got {oneofs[oneof]})"
                    )
                oneofs[oneof] = name
            setter(msg, value, fpath)

    _DECODERS[desc.full_name] = decode
    for f in desc.fields:
        oneof = f.containing_oneof
        real_oneof = oneof.name if oneof is not None and len(oneof.fields) > 1 else None
        null_ok = f.message_type is not None and msg_type(f).full_name == "google.protobuf.Value" and not f.is_repeated
        entry = (f.name, field_decoder(f), real_oneof, null_ok)
        table[f.name] = entry
        table[f.json_name] = entry
    for alias, target in INPUT_ALIASES.get(desc.full_name, {}).items():
        table[alias] = (alias, table[target][1], None, False)
    return decode


def field_decoder(f: FieldDescriptor) -> JsonDecoder:
    """The `(parent message, json value, path)` setter for field `f`."""
    name = f.name
    if is_map(f):
        key_f = msg_type(f).fields_by_name["key"]
        val_f = msg_type(f).fields_by_name["value"]
        key_parse = _string_key if key_f.type == FD.TYPE_STRING else scalar_parser(key_f, from_string=True)
        if val_f.cpp_type == FD.CPPTYPE_MESSAGE:
            val_dec = message_decoder(msg_type(val_f))
            val_null = msg_type(val_f).full_name == "google.protobuf.Value"

            def map_msg(msg: Any, v: Any, path: str) -> None:
                if not isinstance(v, dict):
                    raise InvalidArgument(path, "expected a JSON object")
                target = getattr(msg, name)
                for k, x in v.items():
                    p = f"{path}[{k}]"
                    if x is None and not val_null:
                        raise InvalidArgument(p, "map values cannot be null")
                    val_dec(target[key_parse(k, p)], x, p)

            return map_msg
        val_parse = scalar_parser(val_f, from_string=False)

        def map_scalar(msg: Any, v: Any, path: str) -> None:
            if not isinstance(v, dict):
                raise InvalidArgument(path, "expected a JSON object")
            target = getattr(msg, name)
            for k, x in v.items():
                p = f"{path}[{k}]"
                target[key_parse(k, p)] = val_parse(x, p)

        return map_scalar
    if f.cpp_type == FD.CPPTYPE_MESSAGE:
        sub = message_decoder(msg_type(f))
        is_value = msg_type(f).full_name == "google.protobuf.Value"
        if f.is_repeated:

            def rep_msg(msg: Any, v: Any, path: str) -> None:
                if not isinstance(v, list):
                    raise InvalidArgument(path, "expected a JSON array")
                target = getattr(msg, name)
                for i, x in enumerate(v):
                    if x is None and not is_value:
                        raise InvalidArgument(f"{path}[{i}]", "array items cannot be null")
                    sub(target.add(), x, f"{path}[{i}]")

            return rep_msg

        def one_msg(msg: Any, v: Any, path: str) -> None:
            child = getattr(msg, name)
            child.SetInParent()
            sub(child, v, path)

        return one_msg
    parse = scalar_parser(f, from_string=False)
    if f.is_repeated:

        def rep_scalar(msg: Any, v: Any, path: str) -> None:
            if not isinstance(v, list):
                raise InvalidArgument(path, "expected a JSON array")
            getattr(msg, name).extend([parse(x, f"{path}[{i}]") for i, x in enumerate(v)])

        return rep_scalar

    if f.cpp_type == FD.CPPTYPE_STRING and name in NIL_UUID_WHEN_EMPTY:

        def nil_uuid_scalar(msg: Any, v: Any, path: str) -> None:
            value = parse(v, path)
            setattr(msg, name, "" if value == NIL_UUID else value)  # VoIPBIN's "no id"

        return nil_uuid_scalar

    def one_scalar(msg: Any, v: Any, path: str) -> None:
        setattr(msg, name, parse(v, path))

    return one_scalar


def decode_into(msg: Message, data: Any, path: str = "") -> None:
    """Fill `msg` from a parsed JSON value; raises InvalidArgument naming the bad field."""
    message_decoder(msg.DESCRIPTOR)(msg, data, path)  # type: ignore[arg-type]


def lookup_field(desc: Descriptor, key: str) -> FieldDescriptor | None:
    """A field by its proto name, its lowerCamelCase JSON name or a VoIPBIN input alias."""
    f = desc.fields_by_name.get(INPUT_ALIASES.get(desc.full_name, {}).get(key, key))
    if f is None:
        for cand in desc.fields:
            if cand.json_name == key:
                return cand
    return f


def body_field_mask(desc: Descriptor, data: dict[str, Any], prefix: str = "") -> list[str]:
    """Field paths present in a JSON body, for a PUT/PATCH without `update_mask` (grpc-gateway style).

    Nested plain messages given as non-empty objects contribute their leaf paths
    (`self.target`); maps, repeated fields, well-known types and scalars are
    replaced whole.
    """
    paths: list[str] = []
    for key, value in data.items():
        f = lookup_field(desc, key)
        if f is None:
            continue
        p = join(prefix, f.name)
        if (
            isinstance(value, dict)
            and value
            and f.cpp_type == FD.CPPTYPE_MESSAGE
            and not f.is_repeated
            and msg_type(f).full_name not in WELL_KNOWN
        ):
            paths.extend(body_field_mask(msg_type(f), value, p))
        else:
            paths.append(p)
    return paths


# ---------------------------------------------------------------------------
# Query parameters and path variables: strings -> fields.

Setter = Callable[[Any, list[str], str], None]  # (parent message, values, param name)


def string_setter(f: FieldDescriptor) -> Setter | None:
    """Setter from URL strings for a field, or None when the field cannot come from a URL."""
    name = f.name
    if is_map(f):
        return None
    if f.cpp_type == FD.CPPTYPE_MESSAGE:
        if f.is_repeated:
            return None
        mname = msg_type(f).full_name
        if mname in ("google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask") or (
            mname in _WRAPPERS
        ):
            dec = message_decoder(msg_type(f))
            if mname in _WRAPPERS:
                inner = scalar_parser(msg_type(f).fields_by_name["value"], from_string=True)

                def wrapper(msg: Any, values: list[str], pname: str) -> None:
                    getattr(msg, name).value = inner(_single(values, pname), pname)

                return wrapper

            def wkt(msg: Any, values: list[str], pname: str) -> None:
                child = getattr(msg, name)
                child.SetInParent()
                dec(child, _single(values, pname), pname)

            return wkt
        return None
    parse = scalar_parser(f, from_string=True)
    if f.is_repeated:

        def rep(msg: Any, values: list[str], pname: str) -> None:
            getattr(msg, name).extend([parse(v, pname) for v in values])

        return rep

    def one(msg: Any, values: list[str], pname: str) -> None:
        setattr(msg, name, parse(_single(values, pname), pname))

    return one


def _single(values: list[str], pname: str) -> str:
    if len(values) != 1:
        raise InvalidArgument(pname, "given more than once")
    return values[0]


def unknown_query_parameter(key: str) -> InvalidArgument:
    return InvalidArgument(key, f"unknown query parameter {key!r}", reason="UNKNOWN_QUERY_PARAMETER")


class QueryMapper:
    """Maps query parameters onto request fields not bound by the path or the body.

    Built once per route: every reachable leaf (`filter.color`, `filterColor.label`...)
    is indexed under each snake_case/lowerCamelCase spelling. A parameter the route
    does not know is INVALID_ARGUMENT naming it (unlike grpc-gateway, which ignores
    it): a misspelt or unsupported filter must not silently return everything.
    """

    MAX_DEPTH = 6

    def __init__(self, desc: Descriptor, excluded: Iterable[tuple[str, ...]]) -> None:
        self._excluded = {tuple(e) for e in excluded}
        self.params: dict[str, tuple[tuple[str, ...], Setter, str]] = {}
        self.leaves: list[tuple[tuple[str, ...], FieldDescriptor]] = []
        self._walk(desc, (), [""], 0)

    def _is_excluded(self, path: tuple[str, ...]) -> bool:
        return any(path[: len(e)] == e for e in self._excluded)

    def _walk(self, desc: Descriptor, parents: tuple[str, ...], spellings: list[str], depth: int) -> None:
        for f in desc.fields:
            path = (*parents, f.name)
            if self._is_excluded(path):
                continue
            names = [join(s, n) for s in spellings for n in dict.fromkeys((f.name, f.json_name))]
            setter = string_setter(f)
            if setter is not None:
                canonical = ".".join(path)
                self.leaves.append((path, f))
                for n in names:
                    self.params.setdefault(n, (parents, setter, canonical))
            elif (
                f.cpp_type == FD.CPPTYPE_MESSAGE
                and not f.is_repeated
                and msg_type(f).full_name not in WELL_KNOWN
                and depth < self.MAX_DEPTH
            ):
                self._walk(msg_type(f), path, names, depth + 1)

    def apply(self, msg: Message, pairs: Iterable[tuple[str, str]]) -> None:
        grouped: dict[str, list[str]] = {}
        targets: dict[str, tuple[tuple[str, ...], Setter]] = {}
        for key, value in pairs:
            entry = self.params.get(key)
            if entry is None:
                raise unknown_query_parameter(key)
            parents, setter, canonical = entry
            if value == NIL_UUID and canonical.rpartition(".")[2] in NIL_UUID_WHEN_EMPTY:
                value = ""  # VoIPBIN's "no id": `?owner_id=<nil UUID>` does not filter
            grouped.setdefault(canonical, []).append(value)
            targets[canonical] = (parents, setter)
        for canonical, values in grouped.items():
            parents, setter = targets[canonical]
            target: Any = msg
            for p in parents:
                target = getattr(target, p)
            setter(target, values, canonical)
