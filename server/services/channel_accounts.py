"""Accounts as provider code needs them: credentials opened, looked up by id alone (hooks carry no API token).

The only way provider code (hooks, the delivery worker) reads an account.
Credentials are opened with the database's SecretBox (store/secrets.py) and
travel only inside `OpenedAccount` (repr hides them); nothing here returns
them to an API caller (DESIGN.md invariant 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from convhub.server.domain.addresses import Address
from convhub.server.domain.channels import ACCOUNT_CHANNEL
from convhub.server.store import accounts
from convhub.server.store.db import Database
from convhub.server.store.rows import AccountRow
from convhub.server.store.secrets import SecretBox


@dataclass(frozen=True, slots=True)
class OpenedAccount:
    id: str
    customer_id: str
    channel: str  # the conversation type it carries ("message" for sms)
    provider: str
    enabled: bool
    address: Address | None
    credentials: Mapping[str, str] = field(repr=False)


def opened(row: AccountRow, box: SecretBox) -> OpenedAccount:
    return OpenedAccount(
        id=row.id,
        customer_id=row.customer_id,
        channel=ACCOUNT_CHANNEL[row.type],
        provider=row.provider,
        enabled=bool(row.enabled),
        address=Address(row.address_type, row.address_target, row.address_name) if row.address_target else None,
        credentials=box.open_mapping(row.credentials),
    )


class ChannelAccountService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def load(self, provider: str, account_id: str) -> OpenedAccount | None:
        """The live account `account_id` if it uses `provider`; None for unknown, deleted or another provider's."""
        with self.db.read() as conn:
            row = accounts.live_by_id(conn, account_id)
        if row is None or row.provider != provider:
            return None
        return opened(row, self.db.secrets)
