"""Update masks (AIP-134): which fields of each resource a caller may change.

An empty mask means "every field the caller set to a non-default value".
"""

from __future__ import annotations

from collections.abc import Iterable

CONVERSATION_UPDATABLE = ("name", "detail", "owner_type", "owner_id", "metadata", "tags", "state")
PARTICIPANT_UPDATABLE = ("name", "addresses", "preferred_channel", "opted_out_channels")
ACCOUNT_UPDATABLE = (
    "name",
    "detail",
    "address",
    "credentials",
    "enabled",
    "inactivity_timeout_seconds",
    "secret",
    "token",
    "message_flow_id",
)


class MaskError(ValueError):
    """A mask path that is unknown or not updatable; args[0] is the path."""


def resolve_mask(
    paths: Iterable[str], updatable: tuple[str, ...], known: Iterable[str], set_fields: Iterable[str]
) -> list[str]:
    """The fields to write: the mask's paths, or the set fields when the mask is empty."""
    paths = list(paths)
    if not paths:
        return [f for f in set_fields if f in updatable]
    known_set = set(known)
    result: list[str] = []
    for path in paths:
        top = path.split(".", 1)[0]
        if top not in known_set:
            raise MaskError(path, "unknown field")
        if top not in updatable or "." in path:
            raise MaskError(path, "field cannot be updated")
        if top not in result:
            result.append(top)
    return result
