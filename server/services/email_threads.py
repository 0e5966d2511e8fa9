"""Email lookups the channel needs from the database, each one indexed read (store/email_threads.py).

Reads run inline, like API reads and the hooks' account load: each is a
single indexed statement.
"""

from __future__ import annotations

from collections.abc import Sequence

from convhub.server.services.channel_accounts import OpenedAccount, opened
from convhub.server.store import conversations, email_threads
from convhub.server.store.db import Database
from convhub.server.store.email_threads import Thread


class EmailThreads:
    def __init__(self, db: Database) -> None:
        self.db = db

    def conversation_of(self, customer_id: str, message_ids: Sequence[str]) -> str | None:
        """The conversation of a message (ours or theirs) named by a reply's In-Reply-To/References."""
        with self.db.read() as conn:
            return email_threads.conversation_of(conn, customer_id, message_ids)

    def conversation_exists(self, customer_id: str, conversation_id: str) -> bool:
        """Whether a plus-address names a live conversation of this customer (another's or a stale one is ignored)."""
        with self.db.read() as conn:
            return conversations.live.get(conn, customer_id, conversation_id) is not None

    def sending_account(self, customer_id: str, message_id: str) -> str | None:
        with self.db.read() as conn:
            return email_threads.sending_account(conn, customer_id, message_id)

    def thread_of(self, conversation_id: str) -> Thread:
        with self.db.read() as conn:
            return email_threads.thread_of(conn, conversation_id)

    def account_for(self, address: str) -> OpenedAccount | None:
        """The live email account receiving for `address` (the SMTP receiver's RCPT TO)."""
        with self.db.read() as conn:
            row = email_threads.account_for_address(conn, address)
        return opened(row, self.db.secrets) if row is not None else None
