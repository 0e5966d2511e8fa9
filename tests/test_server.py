"""The process as an operator meets it: first start, CLI, health, reflection, graceful stop."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from sqlalchemy import text

from convhub.server.store.db import alembic_config, create_db_engine
from convhub.server.store.models import Base
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import conversation_service_pb2_grpc
from tests.conftest import BACKENDS, Hub, create_database, start_server, stop_server

SERVICES = ["convhub.v1.ConversationService", "convhub.v1.AccountService", "convhub.v1.IngestService"]


def test_health_is_serving_overall_and_per_service(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ["", *SERVICES]:
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING, service


def test_reflection_lists_every_service(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    [response] = list(
        stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
    )
    names = {s.name for s in response.list_services_response.service}
    assert set(SERVICES) | {"grpc.health.v1.Health"} <= names


def run_cli(database_url: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "convhub.server.cli", "--database-url", database_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_cli_creates_customers_whose_tokens_work(hub: Hub) -> None:
    out = run_cli(hub.database_url, "customer", "create", "acme")
    customer_id = re.search(r"customer_id: (\S+)", out).group(1)  # type: ignore[union-attr]
    token = re.search(r"token: (\S+)", out).group(1)  # type: ignore[union-attr]
    second = re.search(r"token: (\S+)", run_cli(hub.database_url, "token", "create", "--customer", customer_id)).group(
        1
    )  # type: ignore[union-attr]
    assert customer_id in run_cli(hub.database_url, "customer", "list")
    stub = conversation_service_pb2_grpc.ConversationServiceStub(hub.channel())
    for t in (token, second):
        stub.ListConversations(cs.ListConversationsRequest(), metadata=(("authorization", f"Bearer {t}"),), timeout=5)


def test_token_for_unknown_customer_fails_cleanly(hub: Hub) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "convhub.server.cli",
            "--database-url",
            hub.database_url,
            "token",
            "create",
            "--customer",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_first_start_prints_a_working_default_token_once_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    proc, target, _http, lines = start_server(url, data_dir=tmp_path, http=False)
    try:
        token = next(line.strip() for line in lines if line.strip().startswith("chk_"))
        with grpc.insecure_channel(target) as ch:
            stub = conversation_service_pb2_grpc.ConversationServiceStub(ch)
            stub.ListConversations(
                cs.ListConversationsRequest(), metadata=(("authorization", f"Bearer {token}"),), timeout=5
            )
    finally:
        assert stop_server(proc) == 0
    proc2, _target, _http, lines2 = start_server(url, data_dir=tmp_path, http=False)
    assert stop_server(proc2) == 0
    assert not any("chk_" in line for line in lines2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_migrate_command_brings_an_empty_database_up_to_date(backend: str, tmp_path: Path) -> None:
    for url in create_database(backend, tmp_path):
        out = run_cli(url, "migrate")
        assert "up to date" in out
        engine = create_db_engine(url, pool_size=1)
        try:
            head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()  # the newest migration file
            with engine.connect() as conn:
                versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
                diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        finally:
            engine.dispose()
        assert head is not None and versions == [head]
        assert diff == []  # every table the models describe is there


def _watch_sees_not_serving_on_sigterm(tmp_path: Path) -> bool:
    proc, target, _http, _lines = start_server(f"sqlite:///{tmp_path / 'h.db'}", data_dir=tmp_path, http=False)
    try:
        with grpc.insecure_channel(target) as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""), timeout=20)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            proc.terminate()
            not_serving = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.NOT_SERVING)
            return next(watch, None) == not_serving
    finally:
        assert stop_server(proc) == 0


def test_sigterm_turns_health_not_serving_before_the_server_stops(tmp_path: Path) -> None:
    assert _watch_sees_not_serving_on_sigterm(tmp_path)


def test_health_command_reports_serving_and_fails_when_nothing_listens(hub: Hub) -> None:
    cmd = [sys.executable, "-m", "convhub.server.cli", "health", "--timeout", "5"]
    ok = subprocess.run([*cmd, "--address", hub.grpc_target], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and ok.stdout.strip() == "SERVING"
    down = subprocess.run([*cmd, "--address", "127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert down.returncode == 1 and "UNAVAILABLE" in down.stderr


def test_unusable_settings_fail_with_a_message_not_a_traceback(hub: Hub, tmp_path: Path) -> None:
    taken = hub.grpc_target
    cases = [
        (["--database-url", "mysql://nowhere/db", "serve"], "CONVHUB_DATABASE_URL"),
        (["--database-url", f"sqlite:///{tmp_path / 'a.db'}", "serve", "--grpc-address", taken], "grpc address"),
        (
            [
                *("--database-url", f"sqlite:///{tmp_path / 'b.db'}", "serve"),
                *("--grpc-address", "127.0.0.1:0", "--http-address", "127.0.0.1:notaport"),
            ],
            "--http-address (CONVHUB_HTTP_ADDRESS)",
        ),
    ]
    for args, expected in cases:
        result = subprocess.run(
            [sys.executable, "-m", "convhub.server.cli", *args], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 2, (args, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_the_start_up_heap_is_frozen_out_of_full_collections() -> None:
    """`serve` freezes what it built before serving: a full collection then walks only what came later."""
    import gc

    from convhub.server.app import freeze_startup_heap

    built_at_start = [object() for _ in range(3)]  # a tracked container holding them
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 0
        assert not any(o is built_at_start for o in gc.get_objects(2)), "still walked by full collections"
        made_later: list[object] = []
        assert any(o is made_later for o in gc.get_objects())
    finally:
        gc.unfreeze()
