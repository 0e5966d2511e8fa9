"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from convhub.server.store.models import Base
from tests.conftest import Hub


def test_migrated_schema_matches_the_models(hub: Hub) -> None:
    with hub.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
