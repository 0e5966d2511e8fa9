"""Inbound resolution: from what a caller or provider hook says about a message to what is stored.

The rules, in the order they are checked:
- a message needs text, a subject or media;
- without an account, the channel and our (`self`) address are required;
- with an account, the channel is the account's (a different one is refused)
  and our address defaults to the account's;
- both addresses are normalised for the channel's address type;
- provider message ids are unique per dedupe scope: the account when there
  is one, else channel + our address (so two accounts may reuse ids);
- an inbound message is stored received (`done`).
"""

from __future__ import annotations

from dataclasses import dataclass

from convhub.server.domain import messages
from convhub.server.domain.addresses import Address, normalize_address
from convhub.server.domain.channels import ACCOUNT_CHANNEL, CHANNEL_ADDRESS_TYPE
from convhub.server.domain.violations import RuleViolation


@dataclass(frozen=True, slots=True)
class InboundAccount:
    """What an account contributes to an inbound message: its channel and (optional) address."""

    id: str
    type: str
    address: Address | None


@dataclass(frozen=True, slots=True)
class ResolvedInbound:
    channel: str
    self_address: Address
    peer: Address
    dedupe_scope: str
    direction: str
    status: str


def check_unresolved(
    *, has_account: bool, channel: str | None, self_address: Address | None, text: str, subject: str, medias: object
) -> None:
    """The rules that need no lookup; checked before the account is read."""
    if not messages.has_content(text, subject, medias):
        raise RuleViolation("text", "a message needs text, a subject or media")
    if not has_account and channel is None:
        raise RuleViolation("channel", "is required when no account_id is given")
    if not has_account and self_address is None:
        raise RuleViolation("self", "is required when no account_id is given")


def resolve(
    *,
    channel: str | None,
    account: InboundAccount | None,
    self_address: Address | None,
    peer: Address,
    default_region: str,
) -> ResolvedInbound:
    """Channel, normalised addresses, dedupe scope and initial state of an inbound message."""
    if account is not None:
        account_channel = ACCOUNT_CHANNEL[account.type]
        if channel is not None and channel != account_channel:
            raise RuleViolation("channel", f"account {account.id} carries {account_channel}, not {channel}")
        channel = account_channel
    if channel is None:
        raise RuleViolation("channel", "is required when no account_id is given")
    address_type = CHANNEL_ADDRESS_TYPE[channel]
    if self_address is not None:
        self_address = normalize_address(
            "self", self_address, expected_type=address_type, default_region=default_region
        )
    elif account is not None and account.address is not None:
        self_address = account.address
    else:
        raise RuleViolation("self", "is required: the account has no address")
    peer = normalize_address("peer", peer, expected_type=address_type, default_region=default_region)
    return ResolvedInbound(
        channel=channel,
        self_address=self_address,
        peer=peer,
        dedupe_scope=dedupe_scope(account.id if account is not None else None, channel, self_address.target),
        direction=messages.INCOMING,
        status=messages.initial_status(messages.INCOMING),
    )


def dedupe_scope(account_id: str | None, channel: str, self_target: str) -> str:
    """Where provider message ids are unique: the account, or channel + our address."""
    return account_id or f"{channel}:{self_target}"
