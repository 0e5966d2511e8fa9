"""Email threading reads: which conversation a reply belongs to, what the next message answers, which account
an address receives for.

Message-IDs are stored normalised in `transaction_id` (channels/email_mime.py), ours on outbound email and the
sender's on inbound, and looked up through ix_messages_customer_transaction (migration 0009).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection, bindparam, func, select

from convhub.server.store.models import Account, Message, table
from convhub.server.store.rows import AccountRow

messages = table(Message)
accounts = table(Account)
EMAIL = "email"
REFERENCES_KEPT = 10  # the newest Message-IDs of the conversation sent along in References

_by_message_ids = (
    select(messages.c.conversation_id, messages.c.transaction_id)
    .where(
        messages.c.customer_id == bindparam("customer_id"),
        messages.c.transaction_id.in_(bindparam("ids", expanding=True)),
        messages.c.tm_delete.is_(None),
    )
    .order_by(messages.c.tm_create.desc(), messages.c.id.desc())
)
_sent_by = (
    select(messages.c.account_id)
    .where(
        messages.c.customer_id == bindparam("customer_id"),
        messages.c.transaction_id == bindparam("message_id"),
        messages.c.direction == "outgoing",
    )
    .limit(1)
)
_recent_email = (
    select(messages.c.direction, messages.c.transaction_id, messages.c.subject)
    .where(
        messages.c.conversation_id == bindparam("conversation_id"),
        messages.c.channel == EMAIL,
        messages.c.tm_delete.is_(None),
    )
    .order_by(messages.c.tm_create.desc(), messages.c.id.desc())
    .limit(REFERENCES_KEPT * 5)
)
_account_by_address = (
    select(accounts)
    .where(
        accounts.c.type == EMAIL,
        func.lower(accounts.c.address_target) == bindparam("address"),
        accounts.c.tm_delete.is_(None),
    )
    .order_by(accounts.c.tm_create, accounts.c.id)
    .limit(1)
)


def conversation_of(conn: Connection, customer_id: str, message_ids: Sequence[str]) -> str | None:
    """The conversation of the first of `message_ids` (most relevant first) that is one of ours; None if none is."""
    if not message_ids:
        return None
    rows = conn.execute(_by_message_ids, {"customer_id": customer_id, "ids": list(dict.fromkeys(message_ids))}).all()
    found = {row.transaction_id: row.conversation_id for row in rows}
    for message_id in message_ids:
        if message_id in found:
            return str(found[message_id])
    return None


def sending_account(conn: Connection, customer_id: str, message_id: str) -> str | None:
    """The account our message `message_id` went out on (a bounce may come back to another mailbox)."""
    value = conn.execute(_sent_by, {"customer_id": customer_id, "message_id": message_id}).scalar()
    return str(value) if value else None


@dataclass(frozen=True, slots=True)
class Thread:
    """What a new email in a conversation answers: the last inbound Message-ID, the References, the subject."""

    in_reply_to: str = ""
    references: tuple[str, ...] = ()  # oldest first
    subject: str = ""  # the newest email subject in the conversation


def thread_of(conn: Connection, conversation_id: str) -> Thread:
    rows = conn.execute(_recent_email, {"conversation_id": conversation_id}).all()
    in_reply_to = next((r.transaction_id for r in rows if r.direction == "incoming" and r.transaction_id), "")
    subject = next((r.subject for r in rows if r.subject), "")
    ids = [r.transaction_id for r in rows if r.transaction_id][:REFERENCES_KEPT]
    return Thread(in_reply_to=in_reply_to or "", references=tuple(reversed(ids)), subject=subject)


def account_for_address(conn: Connection, address: str) -> AccountRow | None:
    """The live email account receiving for `address` (case-insensitive), the oldest if several claim it."""
    return cast("AccountRow | None", conn.execute(_account_by_address, {"address": address.lower()}).first())
