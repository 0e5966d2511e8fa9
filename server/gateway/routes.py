"""`google.api.http` rules -> a route table, and matching a request path against it.

Routes are read once at start-up from each method descriptor's http option
(and its `additional_bindings`), so annotating an RPC in the proto is all it
takes to expose it over REST. Matching walks a segment trie: literal segments
are tried before variables, variables before `**`, so `/v1/items/special`
wins over `/v1/items/{id}` whatever the declaration order, and a lookup costs
a few dict probes rather than one regex per route.

Template grammar (as in google/api/http.proto):

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    Verb     = ":" LITERAL ;
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import Descriptor

from convhub.server.api.dispatch import Method

HTTP_VERBS = ("get", "put", "post", "delete", "patch")

# Segment kinds inside a compiled template.
_LITERAL, _ANY, _DEEP = 0, 1, 2


class TemplateError(ValueError):
    """A malformed path template in a proto annotation: a start-up error, never a request error."""


@dataclass(frozen=True)
class PathVar:
    """A `{field.path=...}` variable: which request field it fills and which segments it spans.

    `end` is None for a variable ending in `**`: it then runs up to the last segment.
    """

    field_path: tuple[str, ...]
    start: int
    end: int | None


@dataclass(frozen=True)
class Template:
    """A parsed path template: one entry per segment, the variables over them, the custom verb."""

    segments: tuple[tuple[int, str], ...]
    variables: tuple[PathVar, ...]
    verb: str
    text: str


def parse_template(text: str) -> Template:
    """Parse a path template, validating it (a bad annotation fails start-up, loudly)."""
    if not text.startswith("/"):
        raise TemplateError(f"{text!r}: a path template must start with '/'")
    body = text[1:]
    verb = ""
    # The verb is the part after the last ':' that is outside every {...}.
    depth = 0
    for i in range(len(body) - 1, -1, -1):
        ch = body[i]
        if ch == "}":
            depth += 1
        elif ch == "{":
            depth -= 1
        elif ch == ":" and depth == 0:
            body, verb = body[:i], body[i + 1 :]
            if not verb or "/" in verb:
                raise TemplateError(f"{text!r}: bad custom verb")
            break
    segments: list[tuple[int, str]] = []
    variables: list[PathVar] = []
    i = 0
    while i <= len(body):
        if i < len(body) and body[i] == "{":
            close = body.find("}", i)
            if close < 0:
                raise TemplateError(f"{text!r}: unclosed '{{'")
            inner = body[i + 1 : close]
            name, _, pattern = inner.partition("=")
            if not name or not all(p.isidentifier() for p in name.split(".")):
                raise TemplateError(f"{text!r}: bad variable name {name!r}")
            sub = pattern.split("/") if pattern else ["*"]
            start = len(segments)
            deep = False
            for seg in sub:
                if deep:
                    raise TemplateError(f"{text!r}: '**' must be the last segment")
                if seg == "*":
                    segments.append((_ANY, ""))
                elif seg == "**":
                    segments.append((_DEEP, ""))
                    deep = True
                elif seg and "{" not in seg and "}" not in seg:
                    segments.append((_LITERAL, seg))
                else:
                    raise TemplateError(f"{text!r}: bad segment {seg!r} in variable {name!r}")
            variables.append(PathVar(tuple(name.split(".")), start, None if deep else len(segments)))
            i = close + 1
            if i < len(body) and body[i] != "/":
                raise TemplateError(f"{text!r}: a variable must span whole segments")
            i += 1
            continue
        end = body.find("/", i)
        if end < 0:
            end = len(body)
        seg = body[i:end]
        if seg == "*":
            segments.append((_ANY, ""))
        elif seg == "**":
            segments.append((_DEEP, ""))
        elif seg and "{" not in seg and "}" not in seg:
            segments.append((_LITERAL, seg))
        else:
            raise TemplateError(f"{text!r}: bad segment {seg!r}")
        i = end + 1
    for n, (kind, _) in enumerate(segments):
        if kind == _DEEP and n != len(segments) - 1:
            raise TemplateError(f"{text!r}: '**' must be the last segment")
    return Template(tuple(segments), tuple(variables), verb, text)


@dataclass(frozen=True)
class Binding:
    """One HTTP binding of one RPC: verb + template + which part of the request the body fills."""

    method: Method
    http_method: str
    template: Template
    body: str  # "" (no body), "*" or a top-level field name
    response_body: str

    @property
    def path_fields(self) -> tuple[tuple[str, ...], ...]:
        return tuple(v.field_path for v in self.template.variables)


def http_rules(method: Method) -> list[http_pb2.HttpRule]:
    """The method's http rule followed by its additional bindings (none when unannotated)."""
    options = method.descriptor.GetOptions()
    if not options.HasExtension(annotations_pb2.http):
        return []
    rule = options.Extensions[annotations_pb2.http]
    return [rule, *rule.additional_bindings]


def bindings_for(method: Method) -> list[Binding]:
    """Every HTTP binding a method's annotation declares, validated against its request type."""
    out: list[Binding] = []
    for rule in http_rules(method):
        pattern = rule.WhichOneof("pattern")
        if pattern is None:
            continue
        if pattern == "custom":
            verb, path = rule.custom.kind.lower(), rule.custom.path
        else:
            verb, path = pattern, getattr(rule, pattern)
        template = parse_template(path)
        req = method.descriptor.input_type
        for var in template.variables:
            d: Descriptor | None = req
            for n, part in enumerate(var.field_path):
                f = d.fields_by_name.get(part) if d is not None else None
                if f is None or f.is_repeated:
                    raise TemplateError(f"{method.full_name} {path!r}: no singular field {'.'.join(var.field_path)}")
                d = f.message_type if n < len(var.field_path) - 1 else None
        if rule.body not in ("", "*") and rule.body not in req.fields_by_name:
            raise TemplateError(f"{method.full_name}: body field {rule.body!r} does not exist")
        out.append(Binding(method, verb.upper(), template, rule.body, rule.response_body))
    return out


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    any: _Node | None = None
    deep: dict[str, dict[str, Binding]] = field(default_factory=dict)  # verb -> http method -> binding
    leaves: dict[str, dict[str, Binding]] = field(default_factory=dict)  # verb -> http method -> binding


@dataclass(frozen=True)
class Match:
    """A matched binding and the path-variable values (already percent-decoded)."""

    binding: Binding
    values: tuple[tuple[tuple[str, ...], str], ...]


class RouteTable:
    """All bindings, indexed by a segment trie for literal-first matching."""

    def __init__(self, bindings: Iterable[Binding]) -> None:
        self._root = _Node()
        self.bindings: list[Binding] = []
        for b in bindings:
            self._add(b)

    def _add(self, b: Binding) -> None:
        node = self._root
        segs = b.template.segments
        for kind, lit in segs:
            if kind == _LITERAL:
                node = node.literals.setdefault(lit, _Node())
            elif kind == _ANY:
                if node.any is None:
                    node.any = _Node()
                node = node.any
            else:
                slot = node.deep.setdefault(b.template.verb, {})
                self._put(slot, b)
                return
        self._put(node.leaves.setdefault(b.template.verb, {}), b)

    def _put(self, slot: dict[str, Binding], b: Binding) -> None:
        if b.http_method in slot:
            other = slot[b.http_method]
            raise TemplateError(
                f"{b.http_method} {b.template.text} ({b.method.full_name}) clashes with "
                f"{other.template.text} ({other.method.full_name})"
            )
        slot[b.http_method] = b
        self.bindings.append(b)

    def _lookup_segments(self, raw_path: str) -> tuple[dict[str, Binding], list[str]] | None:
        if not raw_path.startswith("/"):
            return None
        segments = raw_path[1:].split("/")
        last = segments[-1]
        colon = last.rfind(":")
        if colon >= 0:
            # Try the custom verb reading first (`items:ingest`), then the whole segment as a value.
            verb_segments = [*segments[:-1], last[:colon]]
            hit = self._walk(self._root, verb_segments, 0, last[colon + 1 :])
            if hit is not None:
                return hit, verb_segments
        hit = self._walk(self._root, segments, 0, "")
        if hit is not None:
            return hit, segments
        return None

    def match(self, http_method: str, raw_path: str) -> Match | dict[str, Binding] | None:
        """The binding for (method, path); the bindings of the path if only the verb is wrong; or None."""
        found = self._lookup_segments(raw_path)
        if found is None:
            return None
        by_method, segments = found
        binding = by_method.get(http_method)
        if binding is None:
            return by_method
        values = []
        for var in binding.template.variables:
            parts = segments[var.start : var.end] if var.end is not None else segments[var.start :]
            values.append((var.field_path, "/".join(unquote(p) for p in parts)))
        return Match(binding, tuple(values))

    def _walk(self, node: _Node, segments: list[str], i: int, verb: str) -> dict[str, Binding] | None:
        if i == len(segments):
            return node.leaves.get(verb) or node.deep.get(verb)
        seg = segments[i]
        if seg:
            child = node.literals.get(seg)
            if child is None and "%" in seg:
                child = node.literals.get(unquote(seg))
            if child is not None:
                hit = self._walk(child, segments, i + 1, verb)
                if hit is not None:
                    return hit
            if node.any is not None:
                hit = self._walk(node.any, segments, i + 1, verb)
                if hit is not None:
                    return hit
        if node.deep:
            return node.deep.get(verb)
        return None


def build_route_table(methods: Iterable[Method]) -> RouteTable:
    """The route table for every annotated method (unannotated ones stay gRPC-only)."""
    bindings: list[Binding] = []
    for m in methods:
        bindings.extend(bindings_for(m))
    return RouteTable(bindings)
