"""REST/JSON shim generated from the protos' `google.api.http` annotations (grpc-gateway style).

`Gateway(dispatcher)` is the raw ASGI callable serving every annotated RPC of
the dispatcher's services, with its OpenAPI document; `server/http_app.py`
composes it with health, metrics and hook routes into the app `convhub serve`
runs on its HTTP port. See `app.py` for the request path.
"""

from convhub.server.gateway.app import OPENAPI_PATH, Gateway

__all__ = ["OPENAPI_PATH", "Gateway"]
