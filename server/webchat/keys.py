"""A web chat account's two keys: the public widget key pages embed, and the signing secret that never leaves.

The widget key only *names* the account (anyone can read it from a page);
what a visitor may do is decided by the visitor token, which only the
server can sign, with the account's signing secret (sealed among the
account's write-only credentials, DESIGN.md invariant 5).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

from convhub.server.domain.addresses import Address

WIDGET_KEY_PREFIX = "wk_"
SIGNING_SECRET = "signing_secret"  # the credentials key
MIN_SECRET_LENGTH = 32


def new_widget_key() -> str:
    return WIDGET_KEY_PREFIX + secrets.token_urlsafe(24)


def with_signing_secret(credentials: Mapping[str, str]) -> dict[str, str]:
    """`credentials` with a generated signing secret unless the caller brought one of their own."""
    merged = dict(credentials)
    if not merged.get(SIGNING_SECRET):
        merged[SIGNING_SECRET] = secrets.token_urlsafe(32)
    return merged


def default_address(account_id: str) -> Address:
    """A web chat account's own address when none is given: rooms and channel choice need one."""
    return Address("webchat", account_id)
