"""Secrets at rest (invariant 5): credentials are stored sealed, and only the right key opens them.

A database dump (sqlite3 .dump / pg_dump) never shows a credential; a wrong
key stops `convhub serve` (exit 2, naming CONVHUB_SECRET_KEY) instead of
returning garbage; rotation keeps old rows readable while new ones use the
new key; rows stored in plaintext before sealing existed are sealed on start.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from alembic import command
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Engine, make_url, select, text

from convhub.server.config import Settings
from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import alembic_config, create_db_engine
from convhub.server.store.models import Account
from convhub.server.store.secrets import (
    KEY_FILE,
    SecretBox,
    SecretKeyError,
    SecretUnreadable,
    load_secret_box,
    parse_keys,
)
from convhub.v1 import account_pb2, common_pb2
from convhub.v1 import account_service_pb2 as acs
from tests.conftest import BACKENDS, TEST_SECRET_KEY, Hub, Tenant, create_database, start_server, stop_server
from tests.support import Api

SECRET = "sk_live_" + uuid.uuid4().hex  # unique per run: a hit in a dump can only come from this test
KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()
accounts = Account.__table__


# --- the box ----------------------------------------------------------------------


def test_sealed_values_open_to_what_was_sealed_and_never_show_it() -> None:
    box = SecretBox([KEY_A])
    creds = {"auth_token": SECRET, "account_sid": "AC1"}
    sealed = box.seal(creds)
    assert SECRET not in sealed and "auth_token" not in sealed
    assert box.seal(creds) != sealed  # fresh IV each time: equal secrets do not look equal
    assert box.open(sealed) == creds and box.open_mapping(sealed) == creds
    assert box.open(box.seal("whsec_abc")) == "whsec_abc"


def test_a_wrong_key_or_a_damaged_value_fails_loudly() -> None:
    box = SecretBox([KEY_A])
    sealed = box.seal({"auth_token": SECRET})
    with pytest.raises(SecretUnreadable, match="CONVHUB_SECRET_KEY"):
        SecretBox([KEY_B]).open(sealed)
    for damaged in (sealed[:-8] + "AAAAAAA=", "not sealed", '{"auth_token": "x"}', "ünïcode"):
        with pytest.raises(SecretUnreadable):
            box.open(damaged)
    with pytest.raises(SecretUnreadable):
        box.open_mapping(box.seal("a string, not a map"))


def test_rotation_seals_with_the_first_key_and_opens_with_every_key() -> None:
    old = SecretBox([KEY_A]).seal({"k": "old"})
    rotated = SecretBox(parse_keys(f" {KEY_B} , {KEY_A} "))
    assert rotated.open(old) == {"k": "old"}
    new = rotated.seal({"k": "new"})
    assert json.loads(Fernet(KEY_B).decrypt(new.encode())) == {"k": "new"}
    with pytest.raises(InvalidToken):
        Fernet(KEY_A).decrypt(new.encode())


@pytest.mark.parametrize(
    "setting", ["", " , ", "not-a-key", f"{KEY_A},short"], ids=["empty", "commas", "not-a-key", "key-then-short"]
)
def test_malformed_key_settings_name_the_setting_but_not_the_key(setting: str) -> None:
    with pytest.raises(SecretKeyError, match="CONVHUB_SECRET_KEY") as caught:
        parse_keys(setting)
    assert KEY_A not in str(caught.value)


def test_without_a_key_sqlite_generates_one_once_and_postgresql_refuses(tmp_path: Path) -> None:
    first = load_secret_box("", backend="sqlite", data_dir=tmp_path / "data")
    key_file = tmp_path / "data" / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [p.name for p in key_file.parent.iterdir()] == [KEY_FILE]  # no staging file left behind
    again = load_secret_box("", backend="sqlite", data_dir=tmp_path / "data")
    assert again.open(first.seal("x")) == "x"
    assert load_secret_box(KEY_A, backend="sqlite", data_dir=tmp_path / "other").open(SecretBox([KEY_A]).seal("y"))
    assert not (tmp_path / "other").exists()  # a configured key writes no file
    with pytest.raises(SecretKeyError, match="CONVHUB_SECRET_KEY is required with postgresql"):
        load_secret_box("", backend="postgresql", data_dir=tmp_path)
    key_file.write_text("garbage\n")
    with pytest.raises(SecretKeyError, match=KEY_FILE):
        load_secret_box("", backend="sqlite", data_dir=tmp_path / "data")


def test_the_key_setting_is_never_shown_in_the_settings_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVHUB_SECRET_KEY", KEY_A)
    settings = Settings()
    assert settings.secret_key == KEY_A and KEY_A not in repr(settings)


# --- what the database holds ------------------------------------------------------


def database_dump(database_url: str) -> str:
    """Everything the database holds, as text: sqlite3 .dump / pg_dump, or a SELECT of every column."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if shutil.which("sqlite3"):
            return subprocess.run(["sqlite3", url.database, ".dump"], capture_output=True, text=True, check=True).stdout
        with sqlite3.connect(url.database) as conn:
            return "\n".join(conn.iterdump())
    if shutil.which("pg_dump"):
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        dumped = subprocess.run(["pg_dump", "--no-owner", conninfo], capture_output=True, text=True, timeout=60)
        if dumped.returncode == 0:
            return dumped.stdout
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            columns = conn.execute(
                text("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'")
            ).all()
            return "\n".join(
                str(value)
                for table, column in columns
                for value in conn.execute(text(f'SELECT "{column}"::text FROM "{table}"')).scalars()
            )
    finally:
        engine.dispose()


def assert_secret_absent(dump: str, secret: str = SECRET) -> None:
    # Binary columns (event payloads) are dumped as hex, so look for that spelling too.
    assert secret not in dump and secret.encode().hex() not in dump.lower()


def hub_secret_box(hub: Hub) -> SecretBox:
    if hub.backend == "sqlite":
        assert hub.data_dir is not None
        return SecretBox([(hub.data_dir / KEY_FILE).read_bytes().strip()])
    return SecretBox([TEST_SECRET_KEY])


def sms_account(api: Api, secret: str = SECRET) -> account_pb2.Account:
    account = account_pb2.Account(
        type=account_pb2.ACCOUNT_TYPE_SMS,
        address=common_pb2.Address(target="+15559990000"),
        credentials={"account_sid": "AC1", "auth_token": secret},
    )
    return api.accounts.CreateAccount(acs.CreateAccountRequest(account=account))


def stored_credentials(engine: Engine, account_id: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(accounts.c.credentials).where(accounts.c.id == account_id)).scalar_one()


def test_a_database_dump_shows_no_credential(hub: Hub, tenant: Tenant, channel: grpc.Channel) -> None:
    api = Api.for_tenant(channel, tenant.metadata)
    created = sms_account(api)
    updated_secret = SECRET + "-updated"
    patch = account_pb2.Account(id=created.id, credentials={"auth_token": updated_secret})
    api.accounts.UpdateAccount(acs.UpdateAccountRequest(account=patch))
    second = sms_account(api)

    dump = database_dump(hub.database_url)
    assert created.id in dump and second.id in dump  # the dump does hold the accounts...
    assert_secret_absent(dump)  # ...but none of their secrets
    assert_secret_absent(dump, updated_secret)
    box = hub_secret_box(hub)  # and what is stored opens, with the server's key, to what was written
    assert box.open(stored_credentials(hub.engine, created.id)) == {"auth_token": updated_secret}
    assert box.open(stored_credentials(hub.engine, second.id)) == {"account_sid": "AC1", "auth_token": SECRET}


# --- starting with the right key, a wrong one, or two -------------------------------


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from create_database(request.param, tmp_path)


@pytest.fixture
def pg_database(tmp_path: Path) -> Iterator[str]:
    yield from create_database("postgresql", tmp_path)


def serve_fails(database_url: str, data_dir: Path, secret_key: str) -> subprocess.CompletedProcess[str]:
    """Run `convhub serve` expecting it to refuse to start."""
    env = {**os.environ, "CONVHUB_DATABASE_URL": database_url, "CONVHUB_DATA_DIR": str(data_dir)}
    env["CONVHUB_SECRET_KEY"] = secret_key
    result = subprocess.run(
        [sys.executable, "-m", "convhub.server.cli", "serve", "--grpc-address", "127.0.0.1:0", "--http-address", ""],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "CONVHUB_SECRET_KEY" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert SECRET not in result.stdout + result.stderr
    return result


def start_and_stop(database_url: str, data_dir: Path, secret_key: str) -> None:
    proc, _target, _http, _lines = start_server(
        database_url, data_dir=data_dir, http=False, env={"CONVHUB_SECRET_KEY": secret_key}
    )
    assert stop_server(proc) == 0


def create_account_through(database_url: str, data_dir: Path, secret_key: str, engine: Engine, secret: str) -> str:
    """Start a server with `secret_key`, create an account over gRPC, stop it; the account id."""
    proc, target, _http, _lines = start_server(
        database_url, data_dir=data_dir, http=False, env={"CONVHUB_SECRET_KEY": secret_key}
    )
    try:
        customer_id = create_customer(engine, "keys")
        token = create_token(engine, customer_id).token
        with grpc.insecure_channel(target) as ch:
            account_id = sms_account(Api.for_tenant(ch, (("authorization", f"Bearer {token}"),)), secret).id
    finally:
        assert stop_server(proc) == 0
    return account_id


def test_wrong_key_refuses_to_start_and_rotation_keeps_old_secrets_readable(pg_database: str, tmp_path: Path) -> None:
    """On PostgreSQL, where replicas share the key (SQLite runs the same code with a configured key)."""
    empty_database = pg_database
    engine = create_db_engine(empty_database, pool_size=1)
    try:
        old = create_account_through(empty_database, tmp_path, KEY_A, engine, SECRET)
        serve_fails(empty_database, tmp_path, KEY_B)  # B alone does not open A's rows

        new = create_account_through(empty_database, tmp_path, f"{KEY_B},{KEY_A}", engine, SECRET + "-new")
        old_sealed, new_sealed = stored_credentials(engine, old), stored_credentials(engine, new)
        assert json.loads(Fernet(KEY_A).decrypt(old_sealed.encode()))["auth_token"] == SECRET  # left as it was
        assert json.loads(Fernet(KEY_B).decrypt(new_sealed.encode()))["auth_token"] == SECRET + "-new"
        with pytest.raises(InvalidToken):
            Fernet(KEY_A).decrypt(new_sealed.encode())  # new rows use the first key

        serve_fails(empty_database, tmp_path, KEY_B)  # the old row still needs A
        assert_secret_absent(database_dump(empty_database))
        assert not (tmp_path / KEY_FILE).exists()  # a configured key is never written down
    finally:
        engine.dispose()


def test_postgresql_without_a_key_refuses_to_start(pg_database: str, tmp_path: Path) -> None:
    result = serve_fails(pg_database, tmp_path, "")
    assert "required with postgresql" in result.stderr


def test_sqlite_without_a_key_generates_one_and_needs_it_thereafter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gen.db'}"
    engine = create_db_engine(url, pool_size=1)
    try:
        account_id = create_account_through(url, tmp_path, "", engine, SECRET)
        key_file = tmp_path / KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert SecretBox([key_file.read_bytes().strip()]).open_mapping(stored_credentials(engine, account_id))
        create_account_through(url, tmp_path, "", engine, SECRET)  # the next start reuses the file's key
        key_file.write_text(KEY_B + "\n")  # a different key file: the stored secrets no longer open
        serve_fails(url, tmp_path, "")
    finally:
        engine.dispose()


def test_plaintext_credentials_from_before_sealing_are_sealed_on_start(empty_database: str, tmp_path: Path) -> None:
    engine = create_db_engine(empty_database, pool_size=1)
    try:
        command.upgrade(alembic_config(engine), "0001")  # the schema before sealing: credentials was JSON
        customer_id = create_customer(engine, "legacy")
        account_id = str(uuid.uuid4())
        plaintext = {"account_sid": "AC1", "auth_token": SECRET}
        as_json = "CAST(:credentials AS json)" if engine.dialect.name == "postgresql" else ":credentials"
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO accounts (id, customer_id, type, name, detail, address_type, address_target,"
                    f" address_name, credentials, tm_create, tm_update) VALUES (:id, :customer_id, 'sms', '', '',"
                    f" '', '', '', {as_json}, 1, 1)"
                ),
                {"id": account_id, "customer_id": customer_id, "credentials": json.dumps(plaintext)},
            )
        assert SECRET in database_dump(empty_database)

        start_and_stop(empty_database, tmp_path, KEY_A)
        sealed = stored_credentials(engine, account_id)
        assert SecretBox([KEY_A]).open(sealed) == plaintext
        assert_secret_absent(database_dump(empty_database))
        start_and_stop(empty_database, tmp_path, KEY_A)  # nothing left to seal: the row is not sealed again
        assert stored_credentials(engine, account_id) == sealed
    finally:
        engine.dispose()
