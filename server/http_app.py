"""The one ASGI app on the HTTP port: REST gateway, provider hooks, health, readiness, /metrics and such.

Composition lives here so the gateway stays a REST shim and channel modules
never touch it: their `ChannelAdapter.hook_routes()` (channels/adapter.py)
are handed to `build_http_app`, which mounts them under `/v1.0/hooks`, so
paths are relative to it (a Twilio adapter's
`Route("/twilio/{account_id}", receive_sms, methods=["POST"])` is served at
`/v1.0/hooks/twilio/{account_id}`).

The proto routes are the hot path, so they skip Starlette entirely: a request
whose path is none of the fixed routes and not under a mounted prefix goes
straight to the gateway's raw ASGI callable, with no router walk, middleware
or per-request Request/Response objects. Everything else goes through a small
Starlette app whose unmatched paths also fall through to the gateway (its JSON
404/405).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from convhub.server.gateway import OPENAPI_PATH, Gateway
from convhub.server.gateway.request_ids import REQUEST_ID_HEADER, REQUEST_ID_KEY, request_id_of

log = logging.getLogger(__name__)

HOOKS_PREFIX = "/v1.0/hooks"

_JSON = "application/json"


class HttpApp:
    """Routes by path: exact paths to their app, mounted prefixes to Starlette, all else to the gateway."""

    def __init__(self, gateway: Gateway, routed: Starlette, exact: dict[str, ASGIApp], prefixes: tuple[str, ...]):
        self.gateway = gateway
        self._routed = routed
        self._exact = exact
        self._prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._routed(scope, receive, send)
            return
        path: str = scope["path"]
        app = self._exact.get(path)
        if app is None:
            app = self._routed if path.startswith(self._prefixes) else self.gateway
        # Every response names its request id (VoIPBIN's X-Request-Id); errors and the access line repeat it.
        request_id = request_id_of(scope["headers"])
        scope[REQUEST_ID_KEY] = request_id
        header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        await app(scope, receive, send_with_id)


def build_http_app(
    gateway: Gateway,
    *,
    ready: Callable[[], bool] = lambda: True,
    hook_routes: Sequence[BaseRoute] = (),
    extra_routes: Sequence[Route] = (),
    mounts: Sequence[Mount] = (),
) -> HttpApp:
    """The HTTP app: `gateway` plus /healthz, /readyz, the OpenAPI document, `hook_routes` and `extra_routes`.

    `ready` answers /readyz (503 while starting or stopping). `extra_routes`
    are fixed paths served beside health (observability's /metrics, later
    static pages); hook routes are mounted under HOOKS_PREFIX; `mounts` are
    other prefixes with routes of their own (the media downloads).
    """
    openapi_body = gateway.openapi_document

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=_JSON)

    async def readyz(request: Request) -> Response:
        try:
            ok = ready()
        except Exception:
            log.exception("readiness check failed")
            ok = False
        if ok:
            return Response(b'{"status":"ready"}', media_type=_JSON)
        return Response(b'{"status":"not ready"}', status_code=503, media_type=_JSON)

    async def openapi(request: Request) -> Response:
        return Response(openapi_body, media_type=_JSON)

    routes: list[Route] = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route(OPENAPI_PATH, openapi, methods=["GET", "HEAD"]),
        *extra_routes,
    ]
    for route in routes:
        if "{" in route.path:
            raise ValueError(f"{route.path}: extra routes are fixed paths (hooks take parameters)")
    mounted: list[BaseRoute] = list(routes)
    prefixes: list[str] = []
    if hook_routes:
        # Unmatched paths under the hooks prefix also get the gateway's JSON 404.
        hooks = Router(list(hook_routes), redirect_slashes=False, default=gateway)
        mounted.append(Mount(HOOKS_PREFIX, app=hooks))
        prefixes.append(HOOKS_PREFIX + "/")
    for mount in mounts:
        mounted.append(mount)
        prefixes.append(mount.path + "/")
    routed = Starlette(routes=mounted)
    routed.router.redirect_slashes = False
    routed.router.default = gateway  # unmatched paths and methods: the gateway's JSON 404/405
    return HttpApp(gateway, routed, {route.path: routed for route in routes}, tuple(prefixes))
