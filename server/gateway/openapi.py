"""An OpenAPI 3.0 document generated from the same descriptors the routes come from.

So it cannot drift from what the gateway serves: one operation per HTTP
binding, path and query parameters from the request fields the path and body
leave over (the `QueryMapper` the gateway itself uses), request bodies and
response schemas from the message types, written the way `codec` writes JSON
(snake_case, enums as lower-case short names, int64 as strings, Timestamp as
date-time strings, Struct as objects). `OUTPUT_ONLY` fields are `readOnly`,
`INPUT_ONLY` ones `writeOnly` (and absent from responses).

Two bindings whose templates differ only in variable names
(`/conversations/{id}` for GET, `/conversations/{conversation.id}` for PUT) are
one OpenAPI path: the first binding's names win and each operation documents
which request field its parameter fills.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from google.api import field_behavior_pb2
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from convhub.server.api import request_rules
from convhub.server.api.request_rules import MAX_DEPTH, declared_rules
from convhub.server.gateway import codec, voipbin_names
from convhub.server.gateway.routes import _ANY, _DEEP, _LITERAL, Binding

if TYPE_CHECKING:
    from convhub.server.gateway.app import RoutePlan

FD = FieldDescriptor
REF = "#/components/schemas/"
NO_NUL = "^[^\\u0000]*$"  # ECMA 262, as OpenAPI patterns are: text never holds NUL (request_rules.py)

_INT_SCHEMAS: dict[int, dict[str, Any]] = {
    FD.CPPTYPE_INT32: {"type": "integer", "format": "int32", "minimum": -(2**31), "maximum": 2**31 - 1},
    FD.CPPTYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 2**32 - 1},
    FD.CPPTYPE_INT64: {"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"},
    FD.CPPTYPE_UINT64: {"type": "string", "format": "uint64", "pattern": "^[0-9]+$"},
}
_NON_FINITE = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
_WKT_SCHEMAS: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$", "example": "1.5s"},
    "google.protobuf.FieldMask": {
        "type": "string",
        "description": "Comma-separated field paths (snake_case or lowerCamelCase).",
    },
    "google.protobuf.Struct": {
        "type": "object",
        "additionalProperties": True,
        "description": f"A JSON object: at most {MAX_DEPTH} levels of nesting, finite numbers, text without NUL.",
    },
    "google.protobuf.Value": {
        "description": f"Any JSON value: at most {MAX_DEPTH} levels of nesting, finite numbers, text without NUL."
    },
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["status", "reason", "message", "request_id", "code", "details"],
            "properties": {
                "status": {"type": "string", "description": "The gRPC status code name, e.g. NOT_FOUND."},
                "reason": {
                    "type": "string",
                    "description": "Machine-readable reason (the ErrorInfo reason, else the status name).",
                },
                "message": {"type": "string"},
                "request_id": {"type": "string", "description": "The request's id, as in its X-Request-Id header."},
                "code": {"type": "integer", "description": "The HTTP status code."},
                "details": {
                    "type": "array",
                    "description": "google.rpc.Status details (ErrorInfo, BadRequest ...), each with its @type.",
                    "items": {
                        "type": "object",
                        "properties": {"@type": {"type": "string"}},
                        "additionalProperties": True,
                    },
                },
            },
        }
    },
}


SEND_ONCE = "Send the API token one way; two different credentials in one call are a 400."


def schema_name(full_name: str) -> str:
    """Component name for a proto type: the package-qualified name, dotted (`convhub.v1.Conversation`)."""
    return full_name


class SchemaBuilder:
    """Collects a component schema for every message and enum a document refers to."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def ref(self, name: str) -> dict[str, Any]:
        return {"$ref": REF + name}

    def message(
        self,
        desc: Descriptor,
        *,
        exclude: frozenset[str] = frozenset(),
        name: str | None = None,
        update: bool = False,
    ) -> Any:
        """A reference to the message's component (built on first use; recursive types are fine).

        `REQUIRED` fields are `required`. An `update` variant (the body of a PUT/PATCH
        whose fields become the update mask) leaves out `IMMUTABLE` fields, which the
        server refuses to change, and requires nothing: a partial body is the point.
        """
        wkt = _WKT_SCHEMAS.get(desc.full_name)
        if wkt is not None:
            return dict(wkt)
        if desc.full_name in codec.WELL_KNOWN:  # wrappers: the wrapped scalar, nullable
            inner = self.single(desc.fields_by_name["value"])
            return {**inner, "nullable": True}
        key = name or schema_name(desc.full_name)
        if key not in self.schemas:
            self.schemas[key] = {}  # placeholder against recursion
            props: dict[str, Any] = {}
            required: list[str] = []
            for f in desc.fields:
                behaviors = codec.field_behaviors(f)
                if f.name in exclude or (update and field_behavior_pb2.IMMUTABLE in behaviors):
                    continue
                props[f.name] = self.field(f)
                if field_behavior_pb2.REQUIRED in behaviors and not update:
                    required.append(f.name)
            self._voipbin_keys(desc.full_name, props)
            schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
            alternatives = voipbin_names.REQUIRED_ALTERNATIVES.get(desc.full_name, {})
            either = [[k, alternatives[k]] for k in required if k in alternatives]
            required = [k for k in required if k not in alternatives]
            if required:
                schema["required"] = required
            if either:  # VoIPBIN's media names a kept media by `id` instead of a `url`
                schema["anyOf"] = [{"required": [k]} for pair in either for k in pair]
            groups = [
                [f.name for f in o.fields if f.name in props]
                for o in desc.oneofs
                if len(o.fields) > 1  # a proto3 `optional` is a synthetic one-field oneof
            ]
            pairs = [[a, b] for g in groups for i, a in enumerate(g) for b in g[i + 1 :]]
            if pairs:
                schema["description"] = "; ".join(f"At most one of {', '.join(g)}." for g in groups)
                schema["not"] = {"anyOf": [{"required": p} for p in pairs]}
            self.schemas[key] = schema
        return self.ref(key)

    @staticmethod
    def _voipbin_keys(full_name: str, props: dict[str, Any]) -> None:
        """VoIPBIN's extra keys for a message (voipbin_names.py): aliases share their field's schema."""
        for alias, target in voipbin_names.INPUT_ALIASES.get(full_name, {}).items():
            if target in props:
                props[alias] = props[target]
        for alias, source in voipbin_names.OUTPUT_ALIASES.get(full_name, ()):
            if source in props:
                props[alias] = props[source]
        for key, value in voipbin_names.OUTPUT_CONSTANTS.get(full_name, ()):
            props[key] = {"type": "string", "enum": [value], "readOnly": True}
        for key, schema in voipbin_names.EXTRA_KEYS.get(full_name, {}).items():
            props[key] = dict(schema)
        if full_name == "convhub.v1.Media" and "type" in props:
            props["type"] = {"type": "string", "enum": ["", *voipbin_names.VOIPBIN_MEDIA_TYPES]}

    def enum(self, f: FieldDescriptor) -> dict[str, Any]:
        key = schema_name(codec.enum_type(f).full_name)
        if key not in self.schemas:
            names = codec.enum_names(codec.enum_type(f))
            self.schemas[key] = {
                "type": "string",
                "enum": names.names,
                "description": "Lower-case value name without the enum prefix. "
                "Input also accepts the full value name or its number.",
            }
        return self.ref(key)

    def single(self, f: FieldDescriptor, owner: FieldDescriptor | None = None) -> dict[str, Any]:
        """Schema of one value of `f` (an element, for repeated fields; `owner` is the map holding it)."""
        owner = owner or f
        ct = f.cpp_type
        if ct == FD.CPPTYPE_MESSAGE:
            result: dict[str, Any] = self.message(codec.msg_type(f))
            return result
        if ct == FD.CPPTYPE_ENUM:
            if codec.enum_type(f).full_name == "google.protobuf.NullValue":
                return {"nullable": True, "enum": [None]}
            return self.enum(f)
        rules = declared_rules(owner)
        if ct in _INT_SCHEMAS:
            schema = dict(_INT_SCHEMAS[ct])
            if rules is not None and rules.HasField("minimum"):
                if schema["type"] == "integer":
                    schema["minimum"] = max(schema["minimum"], rules.minimum)
                elif rules.minimum >= 0:  # int64 travels as a string: no sign
                    schema["pattern"] = "^[0-9]+$"
            return schema
        if ct in (FD.CPPTYPE_DOUBLE, FD.CPPTYPE_FLOAT):
            fmt = "double" if ct == FD.CPPTYPE_DOUBLE else "float"
            return {"oneOf": [{"type": "number", "format": fmt}, _NON_FINITE]}
        if ct == FD.CPPTYPE_BOOL:
            return {"type": "boolean"}
        if f.type == FD.TYPE_BYTES:
            return {"type": "string", "format": "byte"}
        # Text never holds NUL (request_rules.py); a declared pattern is narrower already.
        schema = {"type": "string", "pattern": rules.pattern if rules is not None and rules.pattern else NO_NUL}
        if request_rules.is_uuid(f):
            schema["format"] = "uuid"
        if rules is not None and rules.min_length:
            schema["minLength"] = rules.min_length
        if rules is not None and rules.max_length:
            schema["maxLength"] = rules.max_length
        return schema

    @staticmethod
    def _required_value(f: FieldDescriptor, schema: dict[str, Any]) -> dict[str, Any]:
        """A REQUIRED scalar has a value (AIP-203): a string is not empty, an enum is not `unspecified`."""
        if schema.get("type") == "string" and f.cpp_type == FD.CPPTYPE_STRING:
            return {**schema, "minLength": max(1, schema.get("minLength", 0))}
        if f.cpp_type == FD.CPPTYPE_ENUM and 0 in codec.enum_names(codec.enum_type(f)).out:
            return {"allOf": [schema], "not": {"enum": [codec.enum_names(codec.enum_type(f)).out[0]]}}
        return schema

    def field(self, f: FieldDescriptor) -> dict[str, Any]:
        rules = declared_rules(f)
        if codec.is_map(f):
            entry = codec.msg_type(f)
            value = self.single(entry.fields_by_name["value"], owner=f)
            schema: dict[str, Any] = {"type": "object", "additionalProperties": value}
            if rules is not None and rules.max_items:
                schema["maxProperties"] = rules.max_items
            if rules is not None and (rules.min_key_length or rules.max_key_length):
                # OpenAPI 3.0 has no propertyNames: the key rule can only be told.
                schema["description"] = (
                    f"Keys: {rules.min_key_length} to {rules.max_key_length or 'any number of'} characters, no NUL."
                )
        elif f.is_repeated:
            items = self.single(f)
            if f.cpp_type == FD.CPPTYPE_ENUM:
                items = self._required_value(f, items)  # a list element names a value: never `unspecified`
            schema = {"type": "array", "items": items}
            if field_behavior_pb2.REQUIRED in codec.field_behaviors(f):
                schema["minItems"] = 1  # AIP-203: a required list is a non-empty one
            if rules is not None and rules.max_items:
                schema["maxItems"] = rules.max_items
        else:
            schema = self.single(f)
            if field_behavior_pb2.REQUIRED in codec.field_behaviors(f):
                schema = self._required_value(f, schema)
        behaviors = codec.field_behaviors(f)
        extra: dict[str, Any] = {}
        if f.name in voipbin_names.NULL_WHEN_UNSET and f.has_presence and not f.is_repeated:
            extra["nullable"] = True  # the codec writes null when it is unset
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            extra["readOnly"] = True
        if field_behavior_pb2.INPUT_ONLY in behaviors:
            extra["writeOnly"] = True
        if not extra:
            return schema
        if "$ref" in schema:
            return {"allOf": [schema], **extra}
        return {**schema, **extra}


def updatable_fields(desc: Descriptor) -> list[FieldDescriptor]:
    """The fields an update may name (AIP-134): neither OUTPUT_ONLY nor IMMUTABLE."""
    fixed = {field_behavior_pb2.OUTPUT_ONLY, field_behavior_pb2.IMMUTABLE}
    return [f for f in desc.fields if not fixed & codec.field_behaviors(f)]


def update_mask_schema(desc: Descriptor) -> dict[str, Any]:
    """`update_mask` of an update: comma-separated top-level updatable fields, in either spelling."""
    names = sorted({n for f in updatable_fields(desc) for n in (f.name, f.json_name)})
    one = "(?:" + "|".join(names) + ")"
    return {
        "type": "string",
        "pattern": f"^(?:{one}(?:,{one})*)?$",
        "description": "Comma-separated fields to change (snake_case or lowerCamelCase): " + ", ".join(names) + ".",
    }


def _leaf(desc: Descriptor, path: tuple[str, ...]) -> FieldDescriptor:
    d = desc
    for part in path[:-1]:
        d = codec.msg_type(d.fields_by_name[part])
    f: FieldDescriptor = d.fields_by_name[path[-1]]
    return f


def _shape(binding: Binding) -> tuple[Any, ...]:
    return (tuple(kind if kind != _LITERAL else lit for kind, lit in binding.template.segments), binding.template.verb)


def _render_path(binding: Binding, names_by_segment: dict[int, str]) -> str:
    parts = []
    for i, (kind, lit) in enumerate(binding.template.segments):
        parts.append(lit if kind == _LITERAL else "{" + names_by_segment[i] + "}")
    path = "/" + "/".join(parts)
    if binding.template.verb:
        path += ":" + binding.template.verb
    return path


def _segment_names(binding: Binding) -> dict[int, str]:
    """OpenAPI parameter name per wildcard segment: the field path, numbered when a variable spans several."""
    names: dict[int, str] = {}
    for var in binding.template.variables:
        end = var.end if var.end is not None else len(binding.template.segments)
        wild = [i for i in range(var.start, end) if binding.template.segments[i][0] in (_ANY, _DEEP)]
        base = ".".join(var.field_path)
        for n, i in enumerate(wild):
            names[i] = base if len(wild) == 1 else f"{base}_{n + 1}"
    for i, (kind, _) in enumerate(binding.template.segments):
        if kind != _LITERAL and i not in names:
            names[i] = f"segment_{i}"
    return names


def build_openapi(plans: Iterable[RoutePlan], *, title: str = "convhub") -> dict[str, Any]:
    """The OpenAPI 3.0 document (a JSON-ready dict) for the gateway's route plans.

    Query parameters come from each plan's own `QueryMapper`, so the document lists exactly what is parsed.
    """
    sb = SchemaBuilder()
    paths: dict[str, dict[str, Any]] = {}
    plans = list(plans)
    # One OpenAPI path per template shape, named after its plainest variables (`{id}` over `{conversation.id}`).
    canonical: dict[tuple[Any, ...], dict[int, str]] = {}
    for plan in sorted(plans, key=lambda p: sum(len(v.field_path) for v in p.binding.template.variables)):
        canonical.setdefault(_shape(plan.binding), _segment_names(plan.binding))
    op_ids: dict[str, int] = {}
    for plan in plans:
        binding = plan.binding
        method = binding.method
        md = method.descriptor
        req = md.input_type
        names = canonical[_shape(binding)]
        path = _render_path(binding, names)
        params: list[dict[str, Any]] = []
        for var in binding.template.variables:
            end = var.end if var.end is not None else len(binding.template.segments)
            wild = [i for i in range(var.start, end) if binding.template.segments[i][0] in (_ANY, _DEEP)]
            leaf = _leaf(req, var.field_path)
            for i in wild:
                params.append(
                    {
                        "name": names[i],
                        "in": "path",
                        "required": True,
                        "description": f"Fills `{'.'.join(var.field_path)}`.",
                        "schema": {"type": "string"} if len(wild) > 1 else sb.single(leaf),
                    }
                )
        if plan.query is not None:
            for fpath, f in plan.query.leaves:
                schema = sb.field(f)
                schema.pop("readOnly", None)
                if plan.derive_mask and fpath == ("update_mask",) and plan.mask_body_desc is not None:
                    schema = update_mask_schema(plan.mask_body_desc)
                param: dict[str, Any] = {"name": ".".join(fpath), "in": "query", "required": False, "schema": schema}
                if f.is_repeated:
                    param["style"] = "form"
                    param["explode"] = True
                params.append(param)
        service = md.containing_service
        op_id = f"{service.name}_{md.name}"
        n = op_ids.get(op_id, 0)
        op_ids[op_id] = n + 1
        if n:
            op_id = f"{op_id}_{n + 1}"
        op: dict[str, Any] = {
            "operationId": op_id,
            "tags": [service.name],
            "summary": f"{service.full_name}.{md.name}",
            "parameters": params,
        }
        if binding.body == "*":
            top_path_fields = frozenset(v.field_path[0] for v in binding.template.variables if len(v.field_path) == 1)
            body_schema = (
                sb.message(req, exclude=top_path_fields, name=f"{schema_name(req.full_name)}.Body")
                if top_path_fields
                else sb.message(req)
            )
            # An absent body is `{}`: required when the request has required fields of its own.
            needs_body = any(
                field_behavior_pb2.REQUIRED in codec.field_behaviors(f) and f.name not in top_path_fields
                for f in req.fields
            )
            op["requestBody"] = {"required": needs_body, "content": {"application/json": {"schema": body_schema}}}
        elif binding.body:
            f = req.fields_by_name[binding.body]
            if plan.derive_mask:  # a partial body: what it holds is what changes
                target = codec.msg_type(f)
                schema = sb.message(target, name=f"{schema_name(target.full_name)}.Update", update=True)
            else:
                schema = sb.field(f)
            needs_body = not plan.derive_mask and field_behavior_pb2.REQUIRED in codec.field_behaviors(f)
            op["requestBody"] = {"required": needs_body, "content": {"application/json": {"schema": schema}}}
        resp = md.output_type
        body_field = resp.fields_by_name.get(binding.response_body) if binding.response_body else None
        if body_field is not None and method.server_streaming and body_field.is_repeated and body_field.message_type:
            resp_schema = sb.message(body_field.message_type)  # a batch: one frame per element (gateway/app.py)
        elif binding.response_body:
            resp_schema = sb.field(resp.fields_by_name[binding.response_body])
        else:
            resp_schema = sb.message(resp)
        if method.server_streaming:
            frame = {
                "type": "object",
                "description": "One per line (NDJSON) or per `data:` frame (SSE); a failure ends the stream "
                "with an `error` object instead.",
                "properties": {"result": resp_schema, "error": ERROR_SCHEMA["properties"]["error"]},
            }
            content = {"application/x-ndjson": {"schema": frame}, "text/event-stream": {"schema": {"type": "string"}}}
            ok = {"description": "A stream of messages.", "content": content}
        else:
            ok = {"description": "OK", "content": {"application/json": {"schema": resp_schema}}}
        op["responses"] = {
            "200": ok,
            "default": {"description": "Error", "content": {"application/json": {"schema": sb.ref("Error")}}},
        }
        paths.setdefault(path, {})[binding.http_method.lower()] = op

    health_schema = {"type": "object", "properties": {"status": {"type": "string"}}}
    for hpath, summary, codes in (
        ("/healthz", "Liveness: 200 while the process runs.", ("200",)),
        ("/readyz", "Readiness: 503 while starting, stopping or without a database.", ("200", "503")),
    ):
        paths[hpath] = {
            "get": {
                "operationId": hpath.strip("/"),
                "tags": ["health"],
                "summary": summary,
                "security": [],
                "responses": {
                    c: {"description": c, "content": {"application/json": {"schema": health_schema}}} for c in codes
                },
            }
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": title,
            "version": "v1",
            "description": "REST/JSON mapping of the gRPC API, generated from its google.api.http annotations.",
        },
        "paths": paths,
        "components": {
            "schemas": sb.schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": SEND_ONCE},
                "token": {"type": "apiKey", "in": "query", "name": "token", "description": SEND_ONCE},
                "accesskey": {"type": "apiKey", "in": "query", "name": "accesskey", "description": SEND_ONCE},
                "token_cookie": {"type": "apiKey", "in": "cookie", "name": "token", "description": SEND_ONCE},
                "accesskey_cookie": {"type": "apiKey", "in": "cookie", "name": "accesskey", "description": SEND_ONCE},
            },
        },
        "security": [{"bearer": []}, {"token": []}, {"accesskey": []}, {"token_cookie": []}, {"accesskey_cookie": []}],
    }
