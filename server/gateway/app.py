"""The REST/JSON shim: an ASGI app that turns HTTP calls into `Dispatcher` calls.

Everything route-specific is prepared once when the `Gateway` is built (a `RoutePlan`
per HTTP binding: path setters, query mapper, body decoder, response encoder),
so a request costs a trie lookup, the field conversions and the handler call.
The proto routes are served by this raw ASGI callable (`server/http_app.py`
hands it every path that is not health, metrics, hooks or the OpenAPI
document): building Starlette `Request`/`Response` objects per call would
cost more than all of our own work.

Per request:
  * auth: `Authorization: Bearer <token>`, `?token=` or `?accesskey=`, or a
    `token`/`accesskey` cookie (every way VoIPBIN's bin-api-manager reads one;
    the query ones are removed before the query is mapped onto the request); two
    different credentials are a 400 (`api/credentials.py`);
  * deadline: `Grpc-Timeout` (`5S`, `200m`, `100u`...) -> 504 DEADLINE_EXCEEDED;
  * body: at most `max_body_bytes` (Content-Length and the bytes actually read) -> 413;
  * errors: `errors.py` maps the handler's google.rpc.Status to HTTP like grpc-gateway;
  * server streaming: NDJSON (`{"result": ...}` per line), or SSE for
    `Accept: text/event-stream` (with `id:`/`event:` lines, `Last-Event-ID`
    resumption and keepalive comments, see sse.py); a failure after the first
    byte becomes a final `{"error": ...}` line/frame, since the status line is
    gone by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any, cast
from urllib.parse import parse_qsl

from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.rpc import code_pb2, status_pb2

from convhub.server.api.credentials import single_token
from convhub.server.api.dispatch import Dispatcher, Encoded, Method
from convhub.server.errors import InvalidArgument
from convhub.server.gateway import codec, voipbin_names
from convhub.server.gateway.cookies import credential_cookies
from convhub.server.gateway.errors import (
    dumps,
    error_payload,
    http_status,
    simple_status,
    status_for_exception,
)
from convhub.server.gateway.json_body import parse_json
from convhub.server.gateway.openapi import build_openapi
from convhub.server.gateway.request_ids import REQUEST_ID_KEY
from convhub.server.gateway.routes import Binding, Match, RouteTable, build_route_table
from convhub.server.gateway.sse import KEEPALIVE, SseFraming
from convhub.server.observability.http_calls import ROUTE_KEY

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

AUTH_QUERY_PARAMS = frozenset({"token", "accesskey"})
OPENAPI_PATH = "/v1.0/openapi.json"
# A stream's first message is awaited this long before the 200 goes out, so an
# immediate failure (bad id, bad filter) still gets its real HTTP status.
FIRST_ITEM_GRACE = 0.05

_JSON = b"application/json"
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


def parse_grpc_timeout(value: str) -> float:
    """Seconds from a gRPC `grpc-timeout` header value (`5S`, `200m`, `100u`)."""
    m = _TIMEOUT_RE.fullmatch(value.strip())
    if m is None:
        raise InvalidArgument("grpc-timeout", f"invalid timeout {value!r}: expected e.g. 5S, 200m, 100u")
    return int(m.group(1)) * _TIMEOUT_UNITS[m.group(2)]


class RoutePlan:
    """Everything needed to turn one HTTP binding's request into its proto request, precomputed."""

    def __init__(self, binding: Binding) -> None:
        method = binding.method
        self.binding = binding
        self.method: Method = method
        self.request_cls = method.request_cls
        req = method.descriptor.input_type
        self.path_setters: list[tuple[tuple[str, ...], codec.Setter, str]] = []
        for var in binding.template.variables:
            d: Descriptor | None = req
            for part in var.field_path[:-1]:
                assert d is not None
                d = d.fields_by_name[part].message_type
            assert d is not None  # checked when the routes were built (routes.py)
            leaf = d.fields_by_name[var.field_path[-1]]
            setter = codec.string_setter(leaf)
            if setter is None:
                raise TypeError(f"{method.full_name}: path variable {'.'.join(var.field_path)} is not a scalar")
            self.path_setters.append((var.field_path[:-1], setter, ".".join(var.field_path)))
        self.body = binding.body
        self.body_decoder: codec.JsonDecoder | None = None
        # VoIPBIN's filter body on a GET (voipbin_names.GET_BODY_READERS), read as query parameters.
        self.get_body_reader = voipbin_names.GET_BODY_READERS.get(req.full_name) if not self.body else None
        self.query: codec.QueryMapper | None = None
        excluded = [v.field_path for v in binding.template.variables]
        if self.body == "*":
            self.body_decoder = codec.message_decoder(req)
        else:
            if self.body:
                self.body_decoder = codec.field_decoder(req.fields_by_name[self.body])
                excluded.append((self.body,))
            self.query = codec.QueryMapper(req, excluded)
        mask = req.fields_by_name.get("update_mask")
        body_f = req.fields_by_name.get(self.body) if self.body not in ("", "*") else None
        self.derive_mask = (
            binding.http_method in ("PUT", "PATCH")
            and mask is not None
            and mask.message_type is not None
            and mask.message_type.full_name == "google.protobuf.FieldMask"
            and body_f is not None
            and body_f.message_type is not None
            and not body_f.is_repeated
        )
        self.mask_body_desc = body_f.message_type if body_f is not None else None
        self.mask_exclude = {".".join(p[1:]) for p in excluded if len(p) > 1 and p[0] == self.body}
        resp = method.descriptor.output_type
        # A stream whose response_body is a repeated message field sends each element as its own
        # line/frame (a batch on gRPC, one item per frame on REST): `stream_items` picks them out.
        self.stream_items: Callable[[Message], Iterable[Message]] = lambda m: (m,)
        item = resp
        if binding.response_body:
            f = resp.fields_by_name[binding.response_body]
            name = f.name
            if method.server_streaming and f.is_repeated and f.message_type is not None:
                item = f.message_type
                self.stream_items = lambda m: getattr(m, name)
                self.encode: codec.Encoder = codec.message_encoder(item)
            else:
                field_enc = codec.field_encoder(f)
                self.encode = (
                    (lambda m: getattr(m, name)) if field_enc is None else (lambda m: field_enc(getattr(m, name)))
                )
        else:
            self.encode = codec.message_encoder(resp)
        self.sse = SseFraming(item, method.descriptor.input_type) if method.server_streaming else None

    def build_request(self, match: Match, query: list[tuple[str, str]], body: bytes | None) -> Message:
        """The proto request: body first, then query parameters, then path variables (which win)."""
        req = self.request_cls()
        data: Any = None
        if self.body_decoder is not None:
            data = parse_json(body or b"")
            if self.body == "*":
                self.body_decoder(req, data, "")
            elif data is not None:
                self.body_decoder(req, data, self.body)
        if self.get_body_reader is not None and body:
            query = [*query, *self.get_body_reader(parse_json(body))]
        if self.query is not None and query:
            self.query.apply(req, query)
        elif query:  # body "*": every field comes from the path or the body
            raise codec.unknown_query_parameter(query[0][0])
        for (parents, setter, canonical), (_, value) in zip(self.path_setters, match.values, strict=True):
            target: Any = req
            for p in parents:
                target = getattr(target, p)
            setter(target, [value], canonical)
        if self.derive_mask and isinstance(data, dict) and not req.HasField("update_mask"):
            assert self.mask_body_desc is not None
            paths = [p for p in codec.body_field_mask(self.mask_body_desc, data) if p not in self.mask_exclude]
            mask = cast(Any, req).update_mask  # derive_mask: the request has an `update_mask` field
            mask.SetInParent()
            mask.paths.extend(paths)
        return req


async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", _JSON), (b"content-length", str(len(body)).encode("ascii"))]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_status(
    send: Send,
    scope: Scope,
    status: status_pb2.Status,
    http: int | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    code = http if http is not None else http_status(status.code)
    if code == 401:
        extra = [*(extra or []), (b"www-authenticate", b"Bearer")]
    await _send_json(send, code, dumps(error_payload(status, code, scope.get(REQUEST_ID_KEY, ""))), extra)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class Gateway:
    """The ASGI callable serving every annotated RPC; `server/http_app.py` mounts it with the other routes.

    Route templates are validated when it is built: a malformed annotation fails start-up, not a request.
    `sse_keepalive`: seconds of silence after which an SSE stream gets a comment frame (0: never).
    """

    def __init__(self, dispatcher: Dispatcher, max_body_bytes: int = 1_048_576, sse_keepalive: float = 0) -> None:
        self.dispatcher = dispatcher
        self.max_body_bytes = max_body_bytes
        self.sse_keepalive = sse_keepalive
        self.table: RouteTable = build_route_table(dispatcher.methods.values())
        self.plans: dict[int, RoutePlan] = {id(b): RoutePlan(b) for b in self.table.bindings}
        # Served at OPENAPI_PATH by the HTTP app.
        self.openapi_document: bytes = dumps(build_openapi(self.plans.values()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        raw = scope.get("raw_path")
        path = raw.decode("utf-8", "replace") if raw else scope["path"]
        http_method: str = scope["method"]
        found = self.table.match(http_method, path)
        if found is None:
            await _send_status(send, scope, simple_status(code_pb2.NOT_FOUND, f"no route for {path}"), 404)
            return
        if not isinstance(found, Match):
            allow = ", ".join(sorted(found))
            await _send_status(
                send,
                scope,
                simple_status(
                    code_pb2.UNIMPLEMENTED, f"method {http_method} not allowed for {path} (allowed: {allow})"
                ),
                405,
                [(b"allow", allow.encode("ascii"))],
            )
            return
        plan = self.plans[id(found.binding)]
        scope[ROUTE_KEY] = found.binding.template.text  # the metrics and log label: bounded, unlike the path

        credentials: list[tuple[str, str]] = []  # every token the call carries; credentials.py picks the one
        timeout: str | None = None
        accept = ""
        last_event_id: str | None = None
        content_length: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                credentials.append(("authorization", value.decode("latin-1")))
            elif name == b"grpc-timeout":
                timeout = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == b"cookie":
                credentials.extend(credential_cookies(value.decode("latin-1")))
            elif name == b"last-event-id":
                last_event_id = value.decode("latin-1")
            elif name == b"content-length":
                with contextlib.suppress(ValueError):
                    content_length = int(value)

        query: list[tuple[str, str]] = []
        qs = scope.get("query_string", b"")
        if qs:
            for key, value in parse_qsl(qs.decode("utf-8", "replace"), keep_blank_values=True):
                if key in AUTH_QUERY_PARAMS:
                    credentials.append((key, value))
                else:
                    query.append((key, value))

        try:
            token = single_token(credentials)
            body: bytes | None = None
            if plan.body_decoder is not None or plan.get_body_reader is not None:
                if content_length is not None and content_length > self.max_body_bytes:
                    raise _BodyTooLarge
                body = await _read_body(receive, self.max_body_bytes)
            deadline = parse_grpc_timeout(timeout) if timeout is not None else None
            request = plan.build_request(found, query, body)
            if plan.sse is not None:
                if last_event_id is not None:
                    plan.sse.resume(request, last_event_id)
                await self._stream(plan, request, token, deadline, "text/event-stream" in accept, scope, receive, send)
                return
            if deadline is None:
                response = await self.dispatcher.call(plan.method, request, token)
            else:
                call = self.dispatcher.call(plan.method, request, token, time.monotonic() + deadline)
                response = await asyncio.wait_for(call, deadline)
            payload = dumps(plan.encode(response))
        except _BodyTooLarge:
            await _send_status(
                send,
                scope,
                simple_status(code_pb2.RESOURCE_EXHAUSTED, f"request body larger than {self.max_body_bytes} bytes"),
                413,
            )
            return
        except _ClientGone:
            return
        except asyncio.CancelledError:
            # Only a server stop past its grace cancels a unary call, and it closes the
            # database's commits first: the call did not commit, so a retry is safe.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await _send_status(
                send, scope, simple_status(code_pb2.UNAVAILABLE, "server stopping; the call did not complete")
            )
            return
        except Exception as exc:
            await _send_status(send, scope, status_for_exception(exc))
            return
        await _send_json(send, 200, payload)

    async def _stream(
        self,
        plan: RoutePlan,
        request: Message,
        token: str | None,
        deadline: float | None,
        sse: bool,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Serve a server-streaming RPC; stops (and closes the handler) when the client goes away."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + deadline if deadline is not None else None
        if sse:
            content_type, prefix, suffix = b"text/event-stream", b"data: ", b"\n\n"
        else:
            content_type, prefix, suffix = b"application/x-ndjson", b"", b"\n"
        framing = plan.sse if sse else None
        keepalive = self.sse_keepalive if sse else 0

        def frame(obj: Any) -> bytes:
            return prefix + dumps(obj) + suffix

        def item_frames(item: Message | Encoded) -> bytes:
            message = item.message() if isinstance(item, Encoded) else item
            if framing is not None:
                return b"".join(framing.frame(i, dumps({"result": plan.encode(i)})) for i in plan.stream_items(message))
            return b"".join(frame({"result": plan.encode(i)}) for i in plan.stream_items(message))

        async def next_item(pending: Awaitable[Message | Encoded]) -> Message | Encoded:
            """The next item; on a quiet SSE stream, a keepalive comment every `keepalive` seconds meanwhile."""
            if not keepalive:
                return await pending
            future = asyncio.ensure_future(pending)
            try:
                while True:
                    done, _ = await asyncio.wait({future}, timeout=keepalive)
                    if done:
                        return future.result()
                    await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
            except BaseException:
                future.cancel()
                raise

        task = asyncio.current_task()
        assert task is not None
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    task.cancel()
                    return

        watcher = asyncio.create_task(watch_disconnect())
        items: AsyncIterator[Message | Encoded] = self.dispatcher.stream(plan.method, request, token)
        started = False
        try:
            async with asyncio.timeout_at(expires):
                first = asyncio.ensure_future(items.__anext__())
                try:
                    await asyncio.wait({first}, timeout=FIRST_ITEM_GRACE)
                except BaseException:
                    first.cancel()
                    raise
                if first.done():
                    first_exc = first.exception()
                    if first_exc is not None and not isinstance(first_exc, StopAsyncIteration):
                        raise first_exc
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-type", content_type),
                            (b"cache-control", b"no-cache"),
                            (b"x-accel-buffering", b"no"),
                        ],
                    }
                )
                started = True
                try:
                    item = await next_item(first)
                    while True:
                        await send({"type": "http.response.body", "body": item_frames(item), "more_body": True})
                        item = await next_item(items.__anext__())
                except StopAsyncIteration:
                    pass
            await send({"type": "http.response.body", "body": b""})
        except asyncio.CancelledError:
            if not gone.is_set():
                raise
            task.uncancel()
        except Exception as exc:
            status = status_for_exception(exc)
            if not started:
                await _send_status(send, scope, status)
            else:
                await send(
                    {
                        "type": "http.response.body",
                        "body": frame(error_payload(status, None, scope.get(REQUEST_ID_KEY, ""))),
                    }
                )
        finally:
            watcher.cancel()
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
