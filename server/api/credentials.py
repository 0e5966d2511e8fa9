"""Which API token a call carries: exactly one, however many ways it was sent.

A REST call may send its token as `Authorization: Bearer ...`, `?token=` or
`?accesskey=` (VoIPBIN's spellings); a gRPC call as `authorization` metadata.
When a call carries more than one *different* credential, answering as one of
them would let a proxy or a confused client act as a customer it did not mean
(the other value is silently ignored), so the call is refused as
INVALID_ARGUMENT naming both sources. Repeats of the same value are fine.
"""

from __future__ import annotations

from collections.abc import Iterable

from convhub.server.errors import InvalidArgument


def bearer(value: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value; None for other schemes or an empty token."""
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _identity(source: str, raw: str) -> str | tuple[str] | None:
    """What a credential source names: a token, another scheme's header value (a tuple), or None (absent)."""
    if source != "authorization":
        return raw or None
    token = bearer(raw)
    if token is not None:
        return token
    if not raw.strip() or raw.partition(" ")[0].lower() == "bearer":
        return None  # empty, or "Bearer" without a token: as if not sent
    return (raw,)  # another scheme (Basic ...): a credential, but not an API token


def single_token(sources: Iterable[tuple[str, str]]) -> str | None:
    """The one token among `(source, value)` pairs, or None when there is none.

    `value` is the raw header value for `authorization` and the token itself for
    query parameters. Raises InvalidArgument when two sources name different
    credentials.
    """
    chosen: tuple[str, str | tuple[str]] | None = None
    for source, raw in sources:
        identity = _identity(source, raw)
        if identity is None:
            continue
        if chosen is None:
            chosen = (source, identity)
        elif identity != chosen[1]:
            what = f"{source} given twice" if source == chosen[0] else f"{source} differs from {chosen[0]}"
            raise InvalidArgument(
                source,
                f"ambiguous credentials: {what}; send the API token once",
                reason="AMBIGUOUS_CREDENTIALS",
            )
    if chosen is None or not isinstance(chosen[1], str):
        return None
    return chosen[1]
