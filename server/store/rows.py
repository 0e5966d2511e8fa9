"""Typed views of the rows hot paths read: the columns used, for mypy, at no run-time cost.

Core result rows (`sqlalchemy.Row`) and `RowValues` (values just written)
both have these attributes; queries `cast` to the protocol, which costs a
function call and no copy. Column names are the table's (`metadata`, not
the ORM attribute `meta`).
"""

from __future__ import annotations

from typing import Any, Protocol


class Timestamps(Protocol):
    tm_create: int
    tm_update: int
    tm_delete: int | None


class AccountRow(Timestamps, Protocol):
    id: str
    customer_id: str
    type: str
    name: str
    detail: str
    address_type: str
    address_target: str
    address_name: str
    message_flow_id: str
    provider: str
    enabled: bool
    inactivity_timeout_s: int


class ConversationRow(Timestamps, Protocol):
    id: str
    customer_id: str
    account_id: str | None
    name: str
    detail: str
    type: str
    self_type: str
    self_target: str
    self_name: str
    peer_type: str
    peer_target: str
    peer_name: str
    owner_type: str
    owner_id: str
    metadata: dict[str, Any]
    tags: list[str]
    state: str


class MessageRow(Timestamps, Protocol):
    id: str
    customer_id: str
    conversation_id: str
    direction: str
    status: str
    channel: str
    source_type: str
    source_target: str
    source_name: str
    destination_type: str
    destination_target: str
    destination_name: str
    text: str
    subject: str
    medias: list[Any]
    transaction_id: str | None
    dedupe_scope: str
    delivery_status: str
    error_code: str
    error_message: str
    account_id: str | None
    channel_reason: str


class ParticipantRow(Timestamps, Protocol):
    id: str
    customer_id: str
    conversation_id: str
    name: str
    preferred_channel: str
    last_active_channel: str
    tm_last_active: int | None


class ParticipantAddressRow(Protocol):
    type: str
    target: str
    target_name: str
