"""Every HTTP request's correlation id, as VoIPBIN's API gives one.

The id is the caller's `X-Request-Id` when it is safe to echo (1-64
characters of `[A-Za-z0-9_-]`, so it can never inject into a log line), else a
fresh `req_` + 26 base32 characters. `server/http_app.py` puts it in the scope
under `REQUEST_ID_KEY` (the error envelope's `request_id` and the access log
line read it there) and sends it back on every response as `X-Request-Id`.
"""

from __future__ import annotations

import base64
import re
import secrets

from convhub.server.observability.http_calls import REQUEST_ID_KEY

__all__ = ["REQUEST_ID_HEADER", "REQUEST_ID_KEY", "new_request_id", "request_id_of"]
REQUEST_ID_HEADER = b"x-request-id"
_SAFE = re.compile(rb"[A-Za-z0-9_-]{1,64}")


def new_request_id() -> str:
    """`req_` + 26 base32 characters of 16 random bytes (VoIPBIN's shape)."""
    return "req_" + base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=")


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's `X-Request-Id` if it is safe to echo, else a new id."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            return value.decode("ascii") if _SAFE.fullmatch(value) else new_request_id()
    return new_request_id()
