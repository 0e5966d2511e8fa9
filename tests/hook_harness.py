"""Provider hook routes served by a real uvicorn over a real IngestService and database (SQLite, PostgreSQL).

The harness is what the app builds, minus the gRPC side: the adapter's
`hook_routes(HookContext(...))`, the media download route, and an account
loader that opens the sealed credentials exactly as the service does.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text
from starlette.routing import Mount

from convhub.server.api.dispatch import Caller
from convhub.server.channels.adapter import ChannelAccount, ChannelAdapter, HookContext, Receipt
from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.errors import Unauthenticated
from convhub.server.gateway.media import media_mount
from convhub.server.http_app import HOOKS_PREFIX
from convhub.server.services.accounts import AccountService, NewAccount
from convhub.server.services.ingest import IngestService
from convhub.server.store.customers import create_customer, create_token, customer_for_token
from convhub.server.store.db import Database
from convhub.server.store.media_files import MediaFiles
from convhub.server.store.models import Account, Message
from tests.conftest import BACKENDS, migrated_databases
from tests.provider_standins import serve

ACCOUNT_TYPE = {"telnyx": "sms", "line": "line", "smtp": "email", "twilio": "sms"}


@pytest.fixture(scope="module", params=BACKENDS)
def hook_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    tmp_dir = tmp_path_factory.mktemp(f"hooks-{request.param}")
    yield from migrated_databases(request.param, tmp_dir)


@dataclass
class HookHarness:
    db: Database
    base_url: str
    customer_id: str
    token: str
    media: MediaFiles
    receipts: list[Receipt] = field(default_factory=list)

    def add_account(self, provider: str, credentials: dict[str, str], address: Address | None = None) -> str:
        service = AccountService(self.db, Settings())
        account = service.create(
            NewAccount(
                self.customer_id, ACCOUNT_TYPE[provider], name=provider, address=address, credentials=credentials
            )
        )
        return account.id

    def delete_account(self, account_id: str) -> None:
        AccountService(self.db, Settings()).delete(self.customer_id, account_id)

    def messages(self) -> list[Any]:
        table = Message.__table__
        with self.db.writer.connect() as conn:
            query = select(table).where(table.c.customer_id == self.customer_id).order_by(table.c.tm_create, table.c.id)
            return list(conn.execute(query))

    def conversations(self) -> list[Any]:
        with self.db.writer.connect() as conn:
            return list(
                conn.execute(
                    text("SELECT * FROM conversations WHERE customer_id = :c ORDER BY tm_create, id"),
                    {"c": self.customer_id},
                )
            )

    def event_types(self) -> list[str]:
        with self.db.writer.connect() as conn:
            rows = conn.execute(
                text("SELECT type FROM events WHERE customer_id = :c ORDER BY sequence"), {"c": self.customer_id}
            )
            return [row.type for row in rows]


def _account_loader(db: Database) -> Callable[[str, str], Any]:
    accounts = Account.__table__

    async def load_account(provider: str, account_id: str) -> ChannelAccount | None:
        with db.read() as conn:
            row = conn.execute(
                select(accounts).where(accounts.c.id == account_id, accounts.c.tm_delete.is_(None))
            ).first()
        if row is None or row.type != ACCOUNT_TYPE[provider]:
            return None
        return ChannelAccount(
            id=row.id,
            customer_id=row.customer_id,
            channel="message" if row.type == "sms" else row.type,
            provider=provider,
            address=Address(row.address_type, row.address_target, row.address_name) if row.address_target else None,
            credentials=db.secrets.open_mapping(row.credentials),
        )

    return load_account


@contextlib.asynccontextmanager
async def hook_harness(
    db: Database, tmp_path: Path, adapter_factory: Callable[[MediaFiles], ChannelAdapter], **media_bounds: int
) -> AsyncIterator[tuple[HookHarness, ChannelAdapter]]:
    """A fresh customer, and the adapter's hook routes (plus GET /v1.0/media) served on loopback."""
    customer_id = create_customer(db.writer, f"hooks-{uuid.uuid4().hex[:8]}")
    token = create_token(db.writer, customer_id).token
    bounds = {"max_total_bytes": 1 << 24, "max_item_bytes": 1 << 20, **media_bounds}
    media = MediaFiles(tmp_path / "media", **bounds)
    adapter = adapter_factory(media)
    ingest = IngestService(db, Settings())
    receipts: list[Receipt] = []

    async def receipt(report: Receipt) -> None:
        receipts.append(report)

    def authenticate(token_: str | None) -> Caller:
        with db.read() as conn:
            found = customer_for_token(conn, token_) if token_ else None
        if found is None:
            raise Unauthenticated("invalid API token")
        return Caller(found)

    async with httpx.AsyncClient(timeout=5) as http:

        def routes(base_url: str) -> list[Any]:
            hooks = HookContext(_account_loader(db), ingest, receipt, public_url=base_url, http=http)
            return [Mount(HOOKS_PREFIX, routes=adapter.hook_routes(hooks)), media_mount(authenticate, media)]

        async with serve(routes) as base_url:
            yield HookHarness(db, base_url, customer_id, token, media, receipts), adapter
