"""Fixtures: the real convhub server, on SQLite and on PostgreSQL, called over loopback.

Every test that takes `hub` (or `tenant`) runs once per backend. Each backend
gets one server process for the session (started exactly as a user would,
with `convhub serve`); tests isolate themselves by creating their own
customer, which is what tenancy guarantees anyway.

PostgreSQL: a fresh database is created per run on CONVHUB_TEST_PG_URL
(default: the local trust-auth server) and dropped afterwards. When it is not
reachable the PostgreSQL half is skipped locally, but fails under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from sqlalchemy import Engine, make_url

from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import Database, create_db_engine, open_database, upgrade_schema
from convhub.server.store.secrets import SecretBox

# Seals the PostgreSQL test servers' stored secrets (SQLite servers generate their own). A constant,
# not generated: pytest imports this file twice (as `conftest` and as `tests.conftest`).
TEST_SECRET_KEY = "HSU2ciUajUz1jiIW__g-QxgQqiiH5rO4LaWAzonY-44="
PG_ADMIN_URL = os.environ.get("CONVHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", "postgresql"]
SERVING = re.compile(r"serving gRPC on (\S+?)(?:, REST on (\S+))?$")


def _pg_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pg_available() -> str | None:
    try:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc)


def create_database(backend: str, tmp_dir: Path) -> Iterator[str]:
    """A fresh, empty database URL for `backend`, removed afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_dir / 'convhub.db'}"
        return
    reason = _pg_available()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI but not reachable: {reason}")
        pytest.skip(f"PostgreSQL not reachable: {reason}")
    name = f"convhub_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_conninfo(PG_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Hub:
    """A running `convhub serve` process and how to reach it."""

    backend: str
    database_url: str
    grpc_target: str
    http_base: str | None
    process: subprocess.Popen[str]
    output: list[str]
    engine: Engine
    data_dir: Path | None = None  # where a SQLite server keeps its generated secret key

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.grpc_target)


def start_server(
    database_url: str,
    *,
    data_dir: Path,
    http: bool = True,
    env: dict[str, str] | None = None,
    grpc_address: str = "127.0.0.1:0",
    launcher: tuple[str, ...] = ("-m", "convhub.server.cli"),
) -> tuple[subprocess.Popen[str], str, str | None, list[str]]:
    """Start `convhub serve` on loopback (free ports unless `grpc_address` names one); return once it serves.

    PostgreSQL servers get the session's CONVHUB_SECRET_KEY (they refuse to
    start without one); SQLite servers generate theirs into `data_dir`.
    `env` sets (or, with "", clears) further variables. `launcher` is what
    python runs (a test-only wrapper script around the CLI may add probes).
    """
    base = {**os.environ, "CONVHUB_DATABASE_URL": database_url, "CONVHUB_DATA_DIR": str(data_dir)}
    base.setdefault("CONVHUB_LOG_LEVEL", "WARNING")
    if not database_url.startswith("sqlite"):
        base.setdefault("CONVHUB_SECRET_KEY", TEST_SECRET_KEY)
    env = {**base, **(env or {})}
    proc = subprocess.Popen(
        [
            sys.executable,
            *launcher,
            "serve",
            "--grpc-address",
            grpc_address,
            "--http-address",
            "127.0.0.1:0" if http else "",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        match = SERVING.search(line.strip())
        if match:
            return proc, match.group(1), match.group(2), lines
    proc.wait(timeout=10)
    raise RuntimeError("convhub serve exited before serving:\n" + "\n".join(lines))


def terminate_server(proc: subprocess.Popen[str]) -> int:
    """SIGTERM (a drain), then SIGKILL if it has not exited within 20 s; its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stop_server(proc: subprocess.Popen[str]) -> int:
    terminate_server(proc)
    if proc.stdout is not None:
        proc.stdout.read()
    return proc.returncode


@contextlib.contextmanager
def dedicated_hub(
    database_url: str,
    tmp_dir: Path,
    env: dict[str, str] | None = None,
    *,
    direct_url: str | None = None,
    **server_options: Any,
) -> Iterator[Hub]:
    """A server of its own (for tests that break its database or change its settings).

    Its whole output is collected into `Hub.output` while it runs, so a test can read
    the log after stopping it (and the pipe never fills up). `Hub.engine` connects to
    `direct_url` when given (the real database behind a proxy the server uses).
    `server_options` go to start_server (a fixed `grpc_address`, a test `launcher`).
    """
    proc, grpc_target, http_base, lines = start_server(database_url, data_dir=tmp_dir, env=env, **server_options)
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip("\n") for line in proc.stdout), daemon=True)
    reader.start()
    engine = create_db_engine(direct_url or database_url, pool_size=2)
    try:
        backend = make_url(database_url).get_backend_name()
        yield Hub(backend, database_url, grpc_target, http_base, proc, lines, engine, data_dir=tmp_dir)
    finally:
        engine.dispose()
        terminate_server(proc)
        reader.join(timeout=10)


def running_hub(backend: str, tmp_dir: Path, **options: Any) -> Iterator[Hub]:
    """A fresh database for `backend` and a dedicated server on it (options: dedicated_hub's); both removed after."""
    for url in create_database(backend, tmp_dir):
        # Its output is drained as it comes: a server blocked writing its log would stall every test.
        with dedicated_hub(url, tmp_dir, **options) as hub:
            yield hub


@pytest.fixture(scope="session", params=BACKENDS)
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    yield from running_hub(request.param, tmp_path_factory.mktemp(request.param))


@dataclass
class Tenant:
    """A fresh customer with its own API token: tests isolate themselves by tenancy."""

    customer_id: str
    token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),)


def secret_box_for_tests() -> SecretBox:
    """A SecretBox for databases a test opens in-process (open_database)."""
    return SecretBox([TEST_SECRET_KEY])


def migrated_databases(backend: str, tmp_dir: Path) -> Iterator[Database]:
    """A fresh database for `backend`, migrated and opened in-process as a server opens it (its doorbell
    attached); disposed and removed after the one value it yields."""
    for url in create_database(backend, tmp_dir):
        database = open_database(url, workers=2, secrets=secret_box_for_tests())
        upgrade_schema(database.writer)
        try:
            yield database
        finally:
            database.dispose()


@pytest.fixture
def local_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database opened in-process (no server), for tests of the store and workers."""
    yield from migrated_databases("sqlite", tmp_path)


def new_tenant(hub: Hub) -> Tenant:
    """A customer and token, written on a thread of its own: never on an event loop that the test thread may be
    running (playwright's sync API runs one), where a write that meets the server's SQLite write lock is refused
    (WriteWouldWait, store/sqlite_locks.py) instead of waiting for it."""

    def write() -> Tenant:
        customer_id = create_customer(hub.engine, f"test-{uuid.uuid4().hex[:8]}")
        return Tenant(customer_id, create_token(hub.engine, customer_id).token)

    with ThreadPoolExecutor(1) as thread:
        return thread.submit(write).result()


@pytest.fixture
def tenant(hub: Hub) -> Tenant:
    return new_tenant(hub)


@pytest.fixture
def other_tenant(hub: Hub) -> Tenant:
    return new_tenant(hub)


@pytest.fixture(scope="session")
def channel(hub: Hub) -> Iterator[grpc.Channel]:
    with hub.channel() as ch:
        yield ch
