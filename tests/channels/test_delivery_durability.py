"""Durable delivery across crashes and replicas: real `convhub serve` processes, `kill -9`, one shared queue.

Each test starts its own servers and its own Twilio stand-in (these tests
slow the stand-in down, which would slow every other test sharing it).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from convhub.server.store.db import create_db_engine
from convhub.server.store.messages import messages
from convhub.server.store.models import DeliveryJob
from tests.channel_rig import WAIT, Rig, channel_env, close_hub, new_number, start_hub
from tests.conftest import BACKENDS, Hub, create_database, new_tenant
from tests.twilio_standin import TwilioStandIn

LEASE = "7"  # the shortest the server accepts with CONVHUB_PROVIDER_TIMEOUT=1


@pytest.fixture
def slow_standin() -> Iterator[TwilioStandIn]:
    server = TwilioStandIn().start()
    yield server
    server.stop()


def _wait_sent(standin: TwilioStandIn, peer: str, count: int) -> None:
    """Until the stand-in has recorded `count` messages to `peer` (bounded)."""
    deadline = time.monotonic() + WAIT
    while len(standin.sent_to(peer)) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {count} sends to {peer}")
        time.sleep(0.05)


def _room(rig: Rig, account: dict[str, object], peer: str) -> str:
    assert rig.inbound(account, peer, "hi").status_code == 200  # type: ignore[arg-type]
    [room] = rig.conversations()
    return str(room["id"])


def _queue_sends(
    backend: str, url: str, tmp_path: Path, env: dict[str, str], standin: TwilioStandIn, count: int, in_flight: int
) -> tuple[Hub, Rig, str, str, list[dict[str, Any]]]:
    """A server with `count` sends queued to one new peer, once the stand-in has received `in_flight` of them:
    (hub, rig, room id, peer, the sent messages)."""
    hub = start_hub(backend, url, tmp_path, env)
    rig = Rig(hub, standin, new_tenant(hub))
    account = rig.twilio_account()
    peer = new_number()
    room = _room(rig, account, peer)
    queued = [rig.send(room, f"message {i}") for i in range(count)]
    _wait_sent(standin, peer, in_flight)
    return hub, rig, room, peer, queued


@pytest.mark.parametrize("backend", BACKENDS)
def test_kill_9_with_a_queue_then_restart_delivers_every_message_exactly_once(
    backend: str, tmp_path: Path, slow_standin: TwilioStandIn
) -> None:
    slow_standin.delay = 0.3  # every send is recorded at once, answered 0.3 s later
    env = channel_env(slow_standin, CONVHUB_DELIVERY_CONCURRENCY="2", CONVHUB_DELIVERY_LEASE=LEASE)
    for url in create_database(backend, tmp_path):
        hub, rig, room, peer, queued = _queue_sends(backend, url, tmp_path, env, slow_standin, 16, 3)
        hub.process.kill()  # SIGKILL: two sends in flight, the rest queued
        hub.process.wait()
        close_hub(hub)
        assert len(slow_standin.sent_to(peer)) < len(queued)

        restarted = start_hub(backend, url, tmp_path, env)
        try:
            rig2 = Rig(restarted, slow_standin, rig.tenant)
            for message in queued:
                done = rig2.wait_message(message, timeout=WAIT + float(LEASE))
                assert done["status"] == "done", done
            bodies = Counter(m["body"] for m in slow_standin.sent_to(peer))
            assert bodies == Counter(f"message {i}" for i in range(16)), bodies
            sids = {m["sid"] for m in slow_standin.sent_to(peer)}
            assert {rig2.message(room, m["id"])["transaction_id"] for m in queued} == sids
            rig2.close()
        finally:
            rig.close()
            close_hub(restarted)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupted_attempt_the_provider_cannot_confirm_fails_as_outcome_unknown_and_is_not_resent(
    backend: str, tmp_path: Path, slow_standin: TwilioStandIn
) -> None:
    slow_standin.delay = 0.8
    env = channel_env(slow_standin, CONVHUB_DELIVERY_LEASE=LEASE)
    for url in create_database(backend, tmp_path):
        hub = start_hub(backend, url, tmp_path, env)
        rig = Rig(hub, slow_standin, new_tenant(hub))
        account = rig.twilio_account()
        peer = new_number()
        message = rig.send(_room(rig, account, peer), "did it go?")
        _wait_sent(slow_standin, peer, 1)
        hub.process.kill()
        hub.process.wait()
        close_hub(hub)
        slow_standin.list_fails = True  # Twilio cannot be asked whether the message exists

        restarted = start_hub(backend, url, tmp_path, env)
        try:
            rig2 = Rig(restarted, slow_standin, rig.tenant)
            failed = rig2.wait_message(message, timeout=WAIT + float(LEASE))
            assert (failed["status"], failed["error_code"]) == ("failed", "outcome_unknown"), failed
            assert len(slow_standin.sent_to(peer)) == 1
            assert slow_standin.posts[peer] == 1
            rig2.close()
        finally:
            rig.close()
            close_hub(restarted)


def test_two_servers_on_one_postgresql_share_the_queue_and_never_double_send(
    tmp_path: Path, slow_standin: TwilioStandIn
) -> None:
    # A backlog both workers claim from at once: slow answers, few slots, fast polling.
    slow_standin.delay = 0.2
    env = channel_env(slow_standin, CONVHUB_DELIVERY_CONCURRENCY="2", CONVHUB_DELIVERY_POLL_INTERVAL="0.01")
    for url in create_database("postgresql", tmp_path):
        a = start_hub("postgresql", url, tmp_path / "a", env)
        b = start_hub("postgresql", url, tmp_path / "b", env)
        tenant = new_tenant(a)
        rig_a, rig_b = Rig(a, slow_standin, tenant), Rig(b, slow_standin, tenant)
        try:
            account = rig_a.twilio_account()
            peer = new_number()
            room = _room(rig_a, account, peer)
            # Both replicas take sends; each rings only its own worker, the other finds the jobs by polling.
            queued = [(rig_a if i % 2 else rig_b).send(room, f"message {i}") for i in range(60)]
            for message in queued:
                assert rig_a.wait_message(message)["status"] == "done"
            bodies = Counter(m["body"] for m in slow_standin.sent_to(peer))
            assert bodies == Counter(f"message {i}" for i in range(60)), [b for b, n in bodies.items() if n > 1]
            jobs = DeliveryJob.__table__
            with a.engine.connect() as conn:
                claimers = {row.claimed_by.rsplit(":", 1)[0] for row in conn.execute(jobs.select())}
            assert len(claimers) == 2, claimers  # both processes delivered part of the queue
        finally:
            rig_a.close()
            rig_b.close()
            close_hub(a)
            close_hub(b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_graceful_stop_records_the_attempts_in_flight_and_leaves_no_job_leased(
    backend: str, tmp_path: Path, slow_standin: TwilioStandIn
) -> None:
    """SIGTERM while two attempts wait on the provider: both outcomes are recorded before the process exits,
    and no job is left `sending` under a lease (a restart would otherwise take them for interrupted)."""
    slow_standin.delay = 0.5  # recorded at once, answered half a second later (within CONVHUB_PROVIDER_TIMEOUT)
    env = channel_env(slow_standin, CONVHUB_DELIVERY_CONCURRENCY="2")
    for url in create_database(backend, tmp_path):
        hub, rig, _, peer, queued = _queue_sends(backend, url, tmp_path, env, slow_standin, 6, 2)
        assert close_hub(hub) is None and hub.process.returncode == 0  # SIGTERM, then it drained and exited

        sent = {m["body"] for m in slow_standin.sent_to(peer)}
        engine = create_db_engine(url, pool_size=1)
        try:
            with engine.connect() as conn:
                jobs = conn.execute(select(DeliveryJob.__table__)).all()
                texts = dict(conn.execute(select(messages.c.id, messages.c.text)).tuples().all())
                status = dict(conn.execute(select(messages.c.id, messages.c.status)).tuples().all())
        finally:
            engine.dispose()
            rig.close()
        assert len(jobs) == len(queued)
        assert all(job.state in ("done", "queued") and job.locked_until is None for job in jobs), jobs
        done = {texts[job.message_id] for job in jobs if job.state == "done"}
        assert done == sent and len(done) >= 2  # what the provider took was recorded, nothing else
        assert all(status[job.message_id] == ("done" if job.state == "done" else "progressing") for job in jobs)
