"""Rules every request meets before its handler runs, whatever the method or transport.

Handlers check what a field means (a UUID, a phone number). This module checks
what no handler should have to remember, on every field of every request, so
a new field or method cannot forget it (invariant 6: bad input never crashes
or half-writes):

* text: no NUL (PostgreSQL text cannot hold it, and a SQLite database holding
  one could not move to PostgreSQL) and no lone UTF-16 surrogates (not UTF-8);
* `google.protobuf.Struct`/`Value` (metadata): finite numbers (JSON has no
  NaN or Infinity) and at most `MAX_DEPTH` levels of nesting;
* the limits the contract declares with `(convhub.v1.rules)`: string and key
  lengths, item counts, integer minimums (`proto/convhub/v1/field_rules.proto`).

Each message type's walk is compiled once into checks over only the fields
that can break a rule (a Timestamp or an enum costs nothing), and the field
path (`medias[2].url`, `conversation.metadata.a.b`) is built only on failure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from convhub.server.errors import InvalidArgument
from convhub.v1 import field_rules_pb2

FD = FieldDescriptor

# Deepest accepted nesting of JSON objects/arrays: a REST body (counting the body
# itself) and a Struct value (counting the Struct itself). Protobuf decoders stop
# at 100 message levels and each JSON level costs three (Struct, map entry,
# Value), so 24 leaves room for the messages that carry a stored value back out
# (an event, inside a list or stream response).
MAX_DEPTH = 24

NUL = "must not contain NUL characters"
SURROGATE = "must not contain lone UTF-16 surrogates"
_BAD_TEXT = re.compile("[\x00\ud800-\udfff]")
_STRUCT_TYPES = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")

Check = Callable[[Any, str], None]  # (message, path of the message) -> None or InvalidArgument


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None. ASCII text without NUL costs two C calls."""
    if value.isascii():
        return NUL if "\x00" in value else None
    bad = _BAD_TEXT.search(value)
    if bad is None:
        return None
    return NUL if bad.group() == "\x00" else SURROGATE


def check_text(field: str, value: str) -> str:
    """`value` if it can be stored as text, else InvalidArgument naming `field`."""
    problem = text_problem(value)
    if problem is not None:
        raise InvalidArgument(field, problem)
    return value


def check_number(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgument(field, "must be a finite number (JSON has no NaN or Infinity)")
    return value


def declared_rules(f: FieldDescriptor) -> field_rules_pb2.FieldRules | None:
    """The field's `(convhub.v1.rules)` option, or None when it declares none."""
    opts = f.GetOptions()
    if not opts.HasExtension(field_rules_pb2.rules):
        return None
    rules: field_rules_pb2.FieldRules = opts.Extensions[field_rules_pb2.rules]
    return rules


def is_uuid(f: FieldDescriptor) -> bool:
    """Whether the contract says the field holds a UUID (`(convhub.v1.rules).uuid = true`, any version).

    Not google.api's `field_info.format = UUID4`: that names version 4, and the
    ids this server issues are version 7 (store/db.py new_id).
    """
    rules = declared_rules(f)
    return rules is not None and rules.uuid


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: object) -> str:
    text = str(key)
    return f"{path}[{text[:64]}…]" if len(text) > 64 else f"{path}[{text}]"


# ---------------------------------------------------------------------------
# Struct, Value, ListValue: JSON held in protobuf.


def check_struct(struct: Any, path: str, depth: int = 1) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(path, f"nested deeper than {MAX_DEPTH} levels")
    for key, value in struct.fields.items():
        problem = text_problem(key)
        if problem is not None:
            raise InvalidArgument(_key(path, key), f"key {problem}")
        check_value(value, _join(path, key), depth)


def check_list(values: Any, path: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise InvalidArgument(path, f"nested deeper than {MAX_DEPTH} levels")
    for i, value in enumerate(values.values):
        check_value(value, f"{path}[{i}]", depth)


def check_value(value: Any, path: str, depth: int = 0) -> None:
    """One Value at `depth` (the levels of objects/arrays around it)."""
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        check_text(path, value.string_value)
    elif kind == "number_value":
        check_number(path, value.number_value)
    elif kind == "struct_value":
        check_struct(value.struct_value, path, depth + 1)
    elif kind == "list_value":
        check_list(value.list_value, path, depth + 1)


_STRUCT_CHECKS: dict[str, Check] = {
    "google.protobuf.Struct": check_struct,
    "google.protobuf.Value": check_value,
    "google.protobuf.ListValue": lambda v, p: check_list(v, p, 1),
}


# ---------------------------------------------------------------------------
# Compiling a message type's checks.


def _string_check(shortest: int, longest: int, what: str = "", pattern: str = "") -> Callable[[str, str], None]:
    """(value, path) -> None: the text rule, then the declared lengths and pattern (`what` prefixes descriptions)."""
    matcher = re.compile(pattern) if pattern else None

    def check(value: str, path: str) -> None:
        problem = None if value.isascii() and "\x00" not in value else text_problem(value)
        if problem is not None:
            raise InvalidArgument(path, what + problem)
        if longest and len(value) > longest:
            raise InvalidArgument(path, f"{what}must be at most {longest} characters")
        if len(value) < shortest:
            raise InvalidArgument(
                path, f"{what}must not be empty" if shortest == 1 else f"{what}must be at least {shortest} characters"
            )
        if matcher is not None and value and matcher.fullmatch(value) is None:
            raise InvalidArgument(path, f"{what}must match {pattern}")

    return check


def _text_rules(rules: field_rules_pb2.FieldRules | None) -> Callable[[str, str], None]:
    if rules is None:
        return _string_check(0, 0)
    return _string_check(rules.min_length, rules.max_length, pattern=rules.pattern)


def _value_check(f: FieldDescriptor, rules: field_rules_pb2.FieldRules | None) -> Check | None:
    """(value, path) check for one element of `f` (the value itself when not repeated)."""
    if f.cpp_type == FD.CPPTYPE_STRING and f.type == FD.TYPE_STRING:
        return _text_rules(rules)
    if f.cpp_type == FD.CPPTYPE_MESSAGE:
        assert f.message_type is not None
        return message_check(f.message_type)
    if rules is not None and rules.HasField("minimum") and f.cpp_type != FD.CPPTYPE_ENUM:
        minimum = rules.minimum
        description = "must not be negative" if minimum == 0 else f"must be at least {minimum}"

        def at_least(value: int, path: str) -> None:
            if value < minimum:
                raise InvalidArgument(path, description)

        return at_least
    return None


def _field_check(f: FieldDescriptor) -> Check | None:
    """(parent message, parent path) check for field `f`, or None when nothing about it can be wrong."""
    name = f.name
    rules = declared_rules(f)
    max_items = rules.max_items if rules else 0
    entry = f.message_type if f.message_type is not None and f.message_type.GetOptions().map_entry else None
    if entry is not None:
        key_f, val_f = entry.fields_by_name["key"], entry.fields_by_name["value"]
        key_check = None
        if key_f.type == FD.TYPE_STRING:
            key_check = _string_check(
                rules.min_key_length if rules else 0, rules.max_key_length if rules else 0, "key "
            )
        val_check = _value_check(val_f, rules)
        if key_check is None and val_check is None and not max_items:
            return None

        def map_field(msg: Any, path: str) -> None:
            items = getattr(msg, name)
            if not items:
                return
            if max_items and len(items) > max_items:
                raise InvalidArgument(_join(path, name), f"at most {max_items} entries")
            fpath = _join(path, name)
            for key, value in items.items():
                if key_check is not None:
                    key_check(key, _key(fpath, key))
                if val_check is not None:
                    val_check(value, _key(fpath, key))

        return map_field
    one = _value_check(f, rules)
    if f.is_repeated:
        if one is None and not max_items:
            return None

        def repeated_field(msg: Any, path: str) -> None:
            values = getattr(msg, name)
            if not values:
                return
            if max_items and len(values) > max_items:
                raise InvalidArgument(_join(path, name), f"at most {max_items} items")
            if one is not None:
                fpath = _join(path, name)
                for i, value in enumerate(values):
                    one(value, f"{fpath}[{i}]")

        return repeated_field
    if one is None:
        return None
    if f.cpp_type == FD.CPPTYPE_MESSAGE:

        def message_field(msg: Any, path: str) -> None:
            if msg.HasField(name):
                one(getattr(msg, name), _join(path, name))

        return message_field
    if f.cpp_type == FD.CPPTYPE_STRING:
        shortest = rules.min_length if rules else 0
        longest = (rules.max_length if rules else 0) or 2**62
        if rules and rules.pattern:
            longest = -1  # never "plain": every non-empty value goes through the pattern

        def string_field(msg: Any, path: str) -> None:  # the hot case: a plain, fitting value costs three C calls
            value = getattr(msg, name)  # empty means "not set": nothing to check
            if value and not (value.isascii() and "\x00" not in value and shortest <= len(value) <= longest):
                one(value, _join(path, name))

        return string_field

    def scalar_field(msg: Any, path: str) -> None:
        one(getattr(msg, name), _join(path, name))

    return scalar_field


_CHECKS: dict[str, Check | None] = {}


def _can_break_a_rule(desc: Descriptor, seen: set[str]) -> bool:
    if desc.full_name in _STRUCT_TYPES:
        return True
    if desc.full_name in seen:
        return False
    seen.add(desc.full_name)
    for f in desc.fields:
        if f.type == FD.TYPE_STRING or declared_rules(f) is not None:
            return True
        if f.message_type is not None and _can_break_a_rule(f.message_type, seen):
            return True
    return False


def message_check(desc: Descriptor) -> Check | None:
    """The compiled (message, path) check for a message type, or None when no field can break a rule."""
    if desc.full_name in _CHECKS:
        return _CHECKS[desc.full_name]
    struct_check = _STRUCT_CHECKS.get(desc.full_name)
    if struct_check is not None:
        _CHECKS[desc.full_name] = struct_check
        return struct_check
    if not _can_break_a_rule(desc, set()):
        _CHECKS[desc.full_name] = None
        return None
    checks: list[Check] = []

    def check(msg: Any, path: str) -> None:
        for field_check in checks:
            field_check(msg, path)

    _CHECKS[desc.full_name] = check  # before compiling fields: a field may refer back to this type
    for f in desc.fields:
        c = _field_check(f)
        if c is not None:
            checks.append(c)
    return check


def check_request(request: Message) -> None:
    """Raise InvalidArgument naming the first field of `request` that breaks a rule."""
    try:
        check = _CHECKS[request.DESCRIPTOR.full_name]
    except KeyError:
        check = message_check(request.DESCRIPTOR)  # type: ignore[arg-type]
    if check is not None:
        check(request, "")
