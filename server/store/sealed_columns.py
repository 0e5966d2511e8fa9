"""The columns that hold sealed secrets, and the start-up pass over them.

On every start, before serving: rows written before secrets were sealed
(migration 0002 turned `accounts.credentials` from JSON into sealed text, so
older rows still hold plaintext JSON) are sealed, then every stored secret
is opened once, so a wrong `CONVHUB_SECRET_KEY` stops the start instead of
failing later, on a send or a webhook delivery.
"""

from __future__ import annotations

import json

from sqlalchemy import Column, Engine, select, update

from convhub.server.store.models import Account, WebhookEndpoint, table
from convhub.server.store.secrets import SecretBox

accounts = table(Account)
webhook_endpoints = table(WebhookEndpoint)

SEALED_COLUMNS: list[Column[str]] = [
    accounts.c.credentials,
    webhook_endpoints.c.secret,
    webhook_endpoints.c.previous_secret,  # NULL when no rotation is in its grace period
]


def seal_plaintext_credentials(engine: Engine, box: SecretBox) -> int:
    """Seal the accounts whose credentials are still plaintext JSON; the number sealed (0 once done).

    Idempotent and safe for replicas starting together: each UPDATE matches
    only the plaintext it read, so a row another process sealed is left alone.
    """
    sealed = 0
    with engine.begin() as conn:
        rows = conn.execute(
            select(accounts.c.id, accounts.c.credentials).where(accounts.c.credentials.like("{%"))
        ).all()
        for account_id, plaintext in rows:
            value = {str(k): str(v) for k, v in json.loads(plaintext).items()}
            result = conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id, accounts.c.credentials == plaintext)
                .values(credentials=box.seal(value))
            )
            sealed += result.rowcount
    return sealed


def check_secrets_open(engine: Engine, box: SecretBox) -> int:
    """Open every stored secret once (SecretUnreadable if one does not open); the number checked."""
    checked = 0
    with engine.connect() as conn:
        for column in SEALED_COLUMNS:
            for (sealed,) in conn.execute(select(column).where(column.is_not(None))):
                box.open(sealed)
                checked += 1
    return checked
