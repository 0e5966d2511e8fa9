"""The migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from convhub.server.store.db import MIGRATIONS_DIR
from convhub.server.store.models import Base
from tests.conftest import Hub


def test_migrated_schema_matches_the_models(hub: Hub) -> None:
    with hub.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_migrations_form_one_numbered_chain() -> None:
    """One head, and file NNNN_… holds revision NNNN revising NNNN-1 (branches that merged must be re-chained)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    scripts = ScriptDirectory.from_config(config)
    assert len(scripts.get_heads()) == 1
    chain = list(reversed(list(scripts.walk_revisions())))
    for number, script in enumerate(chain, 1):
        assert script.revision == f"{number:04d}"
        assert script.down_revision == (f"{number - 1:04d}" if number > 1 else None)
        assert script.path is not None and Path(script.path).name.startswith(f"{number:04d}_")
