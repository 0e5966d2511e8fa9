"""Visitor tokens: what a web chat visitor holds, signed by the account's secret, scoped to one conversation.

`vt1.<payload>.<mac>`: the payload is base64url JSON naming the account,
the visitor and the conversation, with an expiry; the mac is HMAC-SHA256 of
`vt1.<payload>` under the account's signing secret. The account id inside
the payload only says which secret to check with: nothing in a token is
trusted before its mac is. A visitor token is no API token (those are
looked up hashed, and this one is never stored), so every regular route
refuses it; the web chat routes accept nothing else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

PREFIX = "vt1"
MAX_TOKEN_LENGTH = 1024


class BadVisitorToken(Exception):
    """Not a visitor token, not ours, forged or expired; the message says which (for logs, not visitors)."""


@dataclass(frozen=True, slots=True)
class VisitorClaims:
    account_id: str
    visitor_id: str
    conversation_id: str
    expires_at: int  # unix seconds


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, signed: str) -> str:
    return _b64(hmac.new(secret.encode(), signed.encode("ascii"), hashlib.sha256).digest())


def sign(claims: VisitorClaims, secret: str) -> str:
    payload = {"a": claims.account_id, "v": claims.visitor_id, "c": claims.conversation_id, "x": claims.expires_at}
    signed = f"{PREFIX}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
    return f"{signed}.{_mac(secret, signed)}"


def unverified_claims(token: str) -> VisitorClaims:
    """The claims as written, unchecked: only to find the account whose secret `verify` needs."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise BadVisitorToken("too long")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != PREFIX:
        raise BadVisitorToken("not a visitor token")
    try:
        payload = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        raise BadVisitorToken("unreadable payload") from None
    if not isinstance(payload, dict):
        raise BadVisitorToken("unreadable payload")
    a, v, c, x = (payload.get(k) for k in ("a", "v", "c", "x"))
    if not (isinstance(a, str) and isinstance(v, str) and isinstance(c, str) and type(x) is int):
        raise BadVisitorToken("unreadable payload")
    return VisitorClaims(a, v, c, x)


def verify(token: str, secret: str, *, now: float, grace: float = 0) -> VisitorClaims:
    """The claims of a token this secret signed that expired no more than `grace` seconds ago."""
    claims = unverified_claims(token)
    signed, _, mac = token.rpartition(".")
    if not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(secret, signed).encode("ascii")):
        raise BadVisitorToken("bad signature")
    if claims.expires_at + grace < now:
        raise BadVisitorToken("expired")
    return claims
