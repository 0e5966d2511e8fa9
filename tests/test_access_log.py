"""One log line per call, as text or JSON: method, code, duration, customer, peer; never a secret."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx

from convhub.server.observability.logs import FLUSH_INTERVAL, AccessLog
from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import start_server
from tests.support import Api, expect_error

SECRET_TEXT = "body-text-that-must-never-be-logged"
INGEST = "/convhub.v1.IngestService/IngestMessage"
LIST = "/convhub.v1.ConversationService/ListConversations"
REQUEST_ID = "req_logged-call_1"


@contextmanager
def server_output(tmp_path: Path, **env: str) -> Iterator[tuple[str, str | None, list[str], str, str]]:
    """A server with `env`, a tenant on it; after the block, `lines` holds everything it printed."""
    url = f"sqlite:///{tmp_path / 'convhub.db'}"
    proc, grpc_target, http_base, lines = start_server(url, data_dir=tmp_path, env=env)
    engine = create_db_engine(url, pool_size=1)
    customer_id = create_customer(engine, "logged")
    token = create_token(engine, customer_id).token
    engine.dispose()
    try:
        yield grpc_target, http_base, lines, customer_id, token
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        lines.extend(rest.splitlines())


def make_calls(grpc_target: str, http_base: str | None, token: str) -> None:
    """Calls whose lines the tests look for: a write with a body, a read, a bad token, REST with ?token=."""
    with grpc.insecure_channel(grpc_target) as channel:
        api = Api.for_tenant(channel, (("authorization", f"Bearer {token}"),))
        api.sms(text=SECRET_TEXT)
        api.conversations.ListConversations(cs.ListConversationsRequest())
        stranger = Api.for_tenant(channel, (("authorization", "Bearer chk_wrong_token_value"),))
        expect_error(
            stranger.conversations.ListConversations, cs.ListConversationsRequest(), grpc.StatusCode.UNAUTHENTICATED
        )
    assert http_base is not None
    r = httpx.get(
        f"{http_base}/v1.0/conversations", params={"token": token}, headers={"X-Request-Id": REQUEST_ID}, timeout=10
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == REQUEST_ID


def test_json_lines_carry_method_code_duration_customer_and_peer_and_no_secret(tmp_path: Path) -> None:
    with server_output(tmp_path, CONVHUB_LOG_LEVEL="INFO", CONVHUB_LOG_FORMAT="json") as (
        target,
        base,
        lines,
        me,
        token,
    ):
        make_calls(target, base, token)
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and all(r["logger"] and r["level"] and r["time"] for r in records)
    calls = [r for r in records if r["logger"] == "convhub.access"]
    ingest = next(r for r in calls if r["method"] == INGEST)
    assert ingest["transport"] == "grpc" and ingest["code"] == "OK" and ingest["customer_id"] == me
    assert isinstance(ingest["duration_ms"], float) and ingest["duration_ms"] > 0
    assert re.fullmatch(r"ipv4:127\.0\.0\.1:\d+", ingest["peer"])
    assert [r["code"] for r in calls if r["method"] == LIST] == ["OK", "UNAUTHENTICATED"]
    assert [r["customer_id"] for r in calls if r["method"] == LIST] == [me, None]
    rest = next(r for r in calls if r["transport"] == "http")
    assert (rest["method"], rest["route"], rest["status"], rest["customer_id"]) == (
        "GET",
        "/v1.0/conversations",
        200,
        me,
    )
    assert re.fullmatch(r"127\.0\.0\.1:\d+", rest["peer"])
    assert rest["request_id"] == REQUEST_ID  # the id the response's X-Request-Id header carried
    everything = "\n".join(lines)
    assert token not in everything and "chk_wrong_token_value" not in everything and SECRET_TEXT not in everything


def test_text_lines_by_default_and_switches_turn_lines_and_metrics_off(tmp_path: Path) -> None:
    with server_output(tmp_path / "on", CONVHUB_LOG_LEVEL="INFO") as (target, base, lines, me, token):
        make_calls(target, base, token)
    pattern = rf"INFO convhub\.access: grpc {re.escape(INGEST)} OK \d+\.\d+ms customer={me} peer=ipv4:127\.0\.0\.1:\d+"
    assert any(re.search(pattern, line) for line in lines), lines
    http_line = r"convhub\.access: http GET /v1\.0/conversations 200 [\d.]+ms customer=\S+ peer=\S+ request_id="
    assert any(re.search(http_line + REQUEST_ID, x) for x in lines), lines
    assert token not in "\n".join(lines)

    off = {"CONVHUB_LOG_LEVEL": "INFO", "CONVHUB_ACCESS_LOG": "false", "CONVHUB_METRICS": "false"}
    with server_output(tmp_path / "off", **off) as (target, base, lines, _, token):
        make_calls(target, base, token)
        assert httpx.get(f"{base}/metrics", timeout=10).status_code == 404
    assert not [line for line in lines if "convhub.access" in line]


class RecordingStream:
    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_lines_of_one_flush_interval_go_out_in_one_write_and_off_the_loop_at_once() -> None:
    stream = RecordingStream()
    log = AccessLog("text", logging.StreamHandler(stream))

    async def three_calls_in_three_turns() -> None:
        for n in range(3):
            log.grpc(INGEST, "OK", 0.001, f"customer-{n}", "ipv4:127.0.0.1:1")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
        assert stream.writes == []  # gathered for FLUSH_INTERVAL, not written every loop turn
        await asyncio.sleep(FLUSH_INTERVAL * 2)

    asyncio.run(three_calls_in_three_turns())
    assert len(stream.writes) == 1
    assert [line.split("customer=")[1].split()[0] for line in stream.writes[0].splitlines()] == [
        "customer-0",
        "customer-1",
        "customer-2",
    ]
    log.grpc(INGEST, "OK", 0.001, "customer-3", "ipv4:127.0.0.1:1")  # no loop here: written at once
    assert len(stream.writes) == 2 and "customer=customer-3" in stream.writes[1]


def test_flush_writes_pending_lines_at_once_and_the_scheduled_write_then_finds_none() -> None:
    stream = RecordingStream()
    log = AccessLog("json", logging.StreamHandler(stream))

    async def call_then_flush() -> None:
        log.grpc(INGEST, "OK", 0.001, None, "ipv4:127.0.0.1:1")
        log.flush()  # what Observability.close does on stop, before the loop may turn again
        assert len(stream.writes) == 1
        await asyncio.sleep(FLUSH_INTERVAL * 2)

    asyncio.run(call_then_flush())
    assert len(stream.writes) == 1
    assert json.loads(stream.writes[0])["method"] == INGEST
