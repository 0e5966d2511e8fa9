"""REST/JSON shim generated from the protos' `google.api.http` annotations (grpc-gateway style).

`build_gateway_app(dispatcher)` returns the ASGI app `convhub serve` runs on its
HTTP port: every annotated RPC of the dispatcher's services, `/healthz`,
`/readyz` and `/v1.0/openapi.json`. See `app.py` for the request path.
"""

from convhub.server.gateway.app import build_gateway_app

__all__ = ["build_gateway_app"]
