"""Participants: a person in a conversation, reachable at one or more addresses of any channel."""

from __future__ import annotations

from collections.abc import Sequence

from convhub.server.domain.addresses import Address, normalize_address
from convhub.server.domain.violations import RuleViolation

MAX_ADDRESSES = 20


def participant_addresses(field: str, addresses: Sequence[Address], *, default_region: str) -> list[Address]:
    """At least one address, at most MAX_ADDRESSES, each normalised for its own (required) type."""
    if not addresses:
        raise RuleViolation(field, "at least one address is required")
    if len(addresses) > MAX_ADDRESSES:
        raise RuleViolation(field, f"at most {MAX_ADDRESSES} addresses")
    return [
        normalize_address(f"{field}[{i}]", a, expected_type=None, default_region=default_region)
        for i, a in enumerate(addresses)
    ]
