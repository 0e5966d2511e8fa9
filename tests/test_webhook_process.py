"""Where the webhook emitter runs (CONVHUB_WEBHOOK_WORKER): `serve`'s child process by default, which is
started again when it dies and dies with `serve`; in `serve` itself; or in a `convhub webhook-worker` of its own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from convhub.server import worker_process
from tests.conftest import TEST_SECRET_KEY, create_database
from tests.eventsupport import wait_until as wait_until_async
from tests.test_webhook_durability import ENV, Server, add_endpoint, event_log, make_tenant, wait_all
from tests.webhook_receiver import run_receiver


def webhook_children(pid: int) -> list[int]:
    """`serve`'s webhook worker processes (its children running `webhook-worker`)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"webhook-worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:
                pass  # gone meanwhile
    return found


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie (dead, not yet reaped by its parent) counts as gone too.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from create_database(request.param, tmp_path)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_the_child_delivers_is_restarted_when_it_dies_and_dies_with_serve(database: str, tmp_path: Path) -> None:
    url = database
    tenant, engine = make_tenant(url)
    with run_receiver() as receiver:
        server = Server(url, tmp_path)
        children: list[int] = []
        try:
            [child] = wait_until(lambda: webhook_children(server.proc.pid), 30, "the webhook worker process")
            children.append(child)
            add_endpoint(server, tenant, receiver.base_url)
            api = server.api(tenant)
            api.sms(peer="+15550001001", text="before")
            wait_all(receiver, {e.id for e in event_log(engine, tenant.customer_id)}, 30)

            os.kill(child, signal.SIGKILL)  # a crash: serve starts another
            [again] = wait_until(
                lambda: [p for p in webhook_children(server.proc.pid) if p != child], 30, "a new webhook worker"
            )
            children.append(again)
            api.sms(peer="+15550001001", text="after")
            wait_all(receiver, {e.id for e in event_log(engine, tenant.customer_id)}, 60)

            server.proc.kill()  # SIGKILL: serve cannot stop its child, the kernel does (PR_SET_PDEATHSIG)
            server.proc.wait()
            wait_until(lambda: gone(again), 10, "the webhook worker to die with serve")
        finally:
            for pid in children:  # one left behind would hold serve's output open, and the test with it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            server.stop()
    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_inline_runs_no_child_and_still_delivers(database: str, tmp_path: Path) -> None:
    url = database
    tenant, engine = make_tenant(url)
    with run_receiver() as receiver:
        server = Server(url, tmp_path, {"CONVHUB_WEBHOOK_WORKER": "inline"})
        try:
            add_endpoint(server, tenant, receiver.base_url)
            server.api(tenant).sms(peer="+15550001002", text="inline")
            wait_all(receiver, {e.id for e in event_log(engine, tenant.customer_id)}, 30)
            assert webhook_children(server.proc.pid) == []
        finally:
            server.stop()
    engine.dispose()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_replicas_running_none_are_served_by_a_webhook_worker_of_its_own(database: str, tmp_path: Path) -> None:
    url, backend = database, "sqlite" if database.startswith("sqlite") else "postgresql"
    tenant, engine = make_tenant(url)
    with run_receiver() as receiver:
        server = Server(url, tmp_path, {"CONVHUB_WEBHOOK_WORKER": "off"})
        worker = None
        try:
            assert webhook_children(server.proc.pid) == []
            add_endpoint(server, tenant, receiver.base_url)
            server.api(tenant).sms(peer="+15550001003", text="waits for a worker")
            time.sleep(1.5)
            assert receiver.received() == [], "a replica with CONVHUB_WEBHOOK_WORKER=off sent webhooks"
            env = {
                **os.environ,
                **ENV,
                "CONVHUB_DATABASE_URL": url,
                "CONVHUB_DATA_DIR": str(tmp_path),
                "CONVHUB_SECRET_KEY": TEST_SECRET_KEY if backend == "postgresql" else "",
            }
            if backend == "sqlite":
                env.pop("CONVHUB_SECRET_KEY")  # the key serve generated into the data dir
            worker = subprocess.Popen([sys.executable, "-m", "convhub.server.cli", "webhook-worker"], env=env)
            wait_all(receiver, {e.id for e in event_log(engine, tenant.customer_id)}, 30)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        finally:
            if worker is not None and worker.poll() is None:
                worker.kill()
                worker.wait()
            server.stop()
    engine.dispose()


def test_a_restart_that_cannot_start_the_process_is_tried_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A child that dies when it cannot be started again (here: the interpreter is gone) is retried, not given up."""
    url = f"sqlite:///{tmp_path / 'convhub.db'}"
    _, engine = make_tenant(url)  # the schema up to date, as `serve` leaves it before starting its child
    engine.dispose()
    monkeypatch.setenv("CONVHUB_SECRET_KEY", TEST_SECRET_KEY)
    monkeypatch.setenv("CONVHUB_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(worker_process, "RESTART_MIN", 0.2)
    caplog.set_level(logging.WARNING, logger="convhub.workers")
    python = sys.executable

    async def scenario() -> None:
        worker = worker_process.WorkerProcess("webhook-process", ["webhook-worker"], url, None, stop_timeout=15)
        await worker.start()
        try:
            await wait_until_async(lambda: bool(webhook_children(os.getpid())), what="the webhook worker process")
            [first] = webhook_children(os.getpid())
            monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
            os.kill(first, signal.SIGKILL)
            await wait_until_async(lambda: "could not start its process" in caplog.text, what="the failed start logged")
            monkeypatch.setattr(sys, "executable", python)
            await wait_until_async(
                lambda: any(p != first and not gone(p) for p in webhook_children(os.getpid())),
                what="a webhook worker started after the failed start",
            )
        finally:
            monkeypatch.setattr(sys, "executable", python)
            await worker.stop()

    asyncio.run(scenario())
