"""Standard Webhooks signatures (and VoIPBIN's body HMAC), computed per attempt.

`webhook-signature` is `v1,<base64 HMAC-SHA256("{id}.{timestamp}.{body}")>`
keyed with the secret's bytes (the base64 after `whsec_`); while a rotated-out
secret is in its grace period each attempt carries one signature per secret,
space-separated, so receivers holding either secret verify. The timestamp is
the attempt's, not the event's: receivers reject stale ones, retries re-sign.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence
from functools import lru_cache

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode("ascii")


@lru_cache(maxsize=1024)  # decoded once per secret, not on every attempt
def secret_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after the `whsec_` prefix."""
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature_header(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> str:
    """The `webhook-signature` value: one `v1,<base64>` per secret, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), signed, hashlib.sha256).digest()).decode("ascii")
        for s in secrets
    )


def voipbin_signature(body: bytes, secret: str) -> str:
    """`X-VoIPBIN-Signature`: hex HMAC-SHA256 of the body with the current secret."""
    return hmac.new(secret_key(secret), body, hashlib.sha256).hexdigest()


def signed_headers(msg_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """Every header that authenticates one attempt; `secrets[0]` is the current secret."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(msg_id, timestamp, body, secrets),
        "x-voipbin-signature": voipbin_signature(body, secrets[0]),
    }
