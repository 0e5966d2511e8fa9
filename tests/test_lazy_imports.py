"""What a SQLite server leaves unloaded (idle RSS, bench/grpc_bench.py), and the checks that let it.

psycopg is for PostgreSQL URLs, alembic for a schema that is behind, cryptography
for the first sealed secret, httpx's command-line client for nobody.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from cryptography.fernet import Fernet
from sqlalchemy import text

from convhub.server.store.db import MIGRATIONS_DIR, DatabaseTimeouts, create_db_engine, migrate
from convhub.server.store.schema_version import head_revision, schema_is_current
from convhub.server.store.secrets import SecretBox, generate_key, is_fernet_key
from tests.conftest import TEST_SECRET_KEY, create_database

HEAVY = ("psycopg", "alembic", "cryptography", "httpx._main")

# The serve command's start-up up to the point where it serves: settings, imports, database, secrets.
START = """
import json, sys
from convhub.server import cli
cli.without_httpx_cli()
from convhub.server import app
args = cli.build_parser().parse_args(["--database-url", sys.argv[1], "serve"])
db = app.prepare_database(cli._settings(args))
db.dispose()
print(json.dumps([name for name in sys.argv[2:] if sys.modules.get(name) is not None]))
"""


def loaded_at_start(database_url: str, data_dir: Path, secret_key: str | None = None) -> list[str]:
    env = {**os.environ, "CONVHUB_DATA_DIR": str(data_dir)}
    env.pop("CONVHUB_SECRET_KEY", None)
    if secret_key is not None:
        env["CONVHUB_SECRET_KEY"] = secret_key
    out = subprocess.run(
        [sys.executable, "-c", START, database_url, *HEAVY], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_a_sqlite_start_on_a_current_schema_loads_neither_psycopg_alembic_nor_cryptography(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'convhub.db'}"
    assert loaded_at_start(url, tmp_path) == []  # the first start migrates, in a forked child (store/forked.py)
    assert loaded_at_start(url, tmp_path) == []  # every later one only reads the version


def test_a_postgresql_start_on_an_empty_database_keeps_alembic_out_of_the_server(tmp_path: Path) -> None:
    for url in create_database("postgresql", tmp_path):
        loaded = loaded_at_start(url, tmp_path, TEST_SECRET_KEY)
        assert "alembic" not in loaded and "psycopg" in loaded
        engine = create_db_engine(url, pool_size=1)
        try:
            assert schema_is_current(engine)
        finally:
            engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from create_database(request.param, tmp_path)


def test_head_revision_is_alembics_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert [head_revision()] == ScriptDirectory.from_config(config).get_heads()


def test_head_revision_declines_to_guess_with_two_heads(tmp_path: Path) -> None:
    for name, revision, down in [("a.py", "1", None), ("b.py", "2", "1"), ("c.py", "3", "1")]:
        (tmp_path / name).write_text(f'revision: str = "{revision}"\ndown_revision: str | None = {down!r}\n')
    assert head_revision(tmp_path) is None


def test_schema_is_current_only_at_the_newest_migration(database_url: str) -> None:
    engine = create_db_engine(database_url, pool_size=1)
    try:
        assert not schema_is_current(engine)  # empty: no alembic_version table yet
        migrate(database_url, DatabaseTimeouts())
        assert schema_is_current(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        assert not schema_is_current(engine)  # behind: alembic runs (and brings it to the head again)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "key",
    [
        TEST_SECRET_KEY.encode(),
        base64.urlsafe_b64encode(bytes([0xFB]) * 32),  # - and _
        base64.urlsafe_b64encode(b"x" * 31),
        base64.urlsafe_b64encode(b"x" * 33),
        base64.standard_b64encode(bytes([0xFB]) * 32),  # + and / (Fernet's decoder takes them too)
        b"not base64 at all!",
        b"",
    ],
    ids=["test-key", "url-safe", "31-bytes", "33-bytes", "plus-slash", "not-base64", "empty"],
)
def test_key_check_agrees_with_fernet(key: bytes) -> None:
    try:
        Fernet(key)
        accepted = True
    except ValueError:
        accepted = False
    assert is_fernet_key(key) is accepted
    if not accepted:
        with pytest.raises(ValueError):
            SecretBox([key])


def test_generated_keys_seal_and_open_with_fernet() -> None:
    key = generate_key()
    sealed = SecretBox([key]).seal({"k": "v"})
    assert json.loads(Fernet(key).decrypt(sealed.encode())) == {"k": "v"}
