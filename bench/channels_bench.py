#!/usr/bin/env python
"""convhub channels benchmark: signed Twilio hooks in, SendMessage out to a Twilio stand-in, on SQLite and PostgreSQL.

For each backend: start the real server (grpc_bench's `start`, i.e. `tests.conftest.start_server`)
with its Twilio API pointed at a loopback stand-in (tests/twilio_standin.py) that answers at once,
seed a tenant, a Twilio account and SEEDED_ROOMS rooms, then from a separate (spawned) process:

  (a0) gRPC IngestMessage into the existing rooms            (the ceiling for a)
  (a)  signed Twilio inbound hooks into the same rooms       ratio to (a0), target >= 0.5
  (b)  SendMessage, N in flight for --seconds; the rate at which the stand-in then receives the
       sends (first send to last arrival)
  (b') SendMessage paced at --rate/s for --seconds; latency from the send call returning to the
       stand-in receiving the request: p50 / p99 (target p99 < 100 ms)

Conventions as bench/grpc_bench.py: ratios from the same run, never fails CI (exit 0 unless a server
fails to start).

    python bench/channels_bench.py [--seconds 10] [--backends sqlite,postgresql] [--concurrency 32] [--rate 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import grpc_bench  # noqa: E402  (shared server start/stop, percentiles, machine info)

REPO = grpc_bench.REPO
SELF_NUMBER = "+15559990000"
SEEDED_ROOMS = 100
ROOM_PEER_BASE = 1_000_000
PUBLIC_URL = "https://hub.bench.test"
HOOK_TARGET = 0.5
P99_TARGET_MS = 100.0
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Load:
    """One load run, picklable for the spawned load process."""

    kind: str  # ingest | hooks | send_closed | send_paced
    grpc_target: str
    http_base: str
    token: str
    account_id: str
    auth_token: str
    room_ids: tuple[str, ...]
    seconds: float
    warmup: float
    concurrency: int
    rate: float
    tag: str


@dataclass
class Outcome:
    calls: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    returned_at: dict[str, float]  # send text -> wall time the call returned (send scenarios)
    first_error: str = ""

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0


def run_load(load: Load) -> Outcome:
    return asyncio.run(_run_load(load))


def _peer(i: int) -> str:
    return f"+1555{ROOM_PEER_BASE + i % SEEDED_ROOMS:07d}"


async def _run_load(load: Load) -> Outcome:
    async with contextlib.AsyncExitStack() as stack:
        call = await _factory(load, stack)
        latencies: list[float] = []
        returned: dict[str, float] = {}
        errors: list[str] = []
        counter = iter(range(10**9))
        start = time.perf_counter()
        measure_from, deadline = start + load.warmup, start + load.warmup + load.seconds

        async def one() -> None:
            n = next(counter)
            t0 = time.perf_counter()
            try:
                text = await call(n)
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                return
            t1 = time.perf_counter()
            if measure_from <= t1 <= deadline:
                latencies.append(t1 - t0)
                if text:
                    returned[text] = time.time()

        if load.kind == "send_paced":
            tasks = []
            interval = 1.0 / load.rate
            next_at = time.perf_counter()
            while next_at < deadline:
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
                tasks.append(asyncio.create_task(one()))
                next_at += interval
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=CALL_TIMEOUT + 30)
        else:

            async def worker() -> None:
                while time.perf_counter() < deadline:
                    await one()

            await asyncio.wait_for(
                asyncio.gather(*(worker() for _ in range(load.concurrency))),
                timeout=load.warmup + load.seconds + CALL_TIMEOUT + 30,
            )
    latencies.sort()
    return Outcome(
        calls=len(latencies),
        seconds=load.seconds,
        p50_ms=grpc_bench._percentile(latencies, 0.50) * 1000,
        p99_ms=grpc_bench._percentile(latencies, 0.99) * 1000,
        errors=len(errors),
        returned_at=returned,
        first_error=errors[0] if errors else "",
    )


async def _factory(load: Load, stack: contextlib.AsyncExitStack) -> Callable[[int], Awaitable[str]]:
    """A coroutine function making call number n; returns the message text for send scenarios."""
    if load.kind == "hooks":
        return await _hook_factory(load, stack)
    import grpc

    from convhub.v1 import common_pb2, conversation_service_pb2, conversation_service_pb2_grpc, ingest_service_pb2
    from convhub.v1 import ingest_service_pb2_grpc as ingest_grpc

    channels = [grpc.aio.insecure_channel(load.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])]
    channels.append(grpc.aio.insecure_channel(load.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]))
    for ch in channels:
        stack.push_async_callback(ch.close, None)
        await asyncio.wait_for(ch.channel_ready(), timeout=CALL_TIMEOUT)
    metadata = (("authorization", f"Bearer {load.token}"),)
    if load.kind == "ingest":
        ingest_stubs = [ingest_grpc.IngestServiceStub(ch) for ch in channels]

        async def ingest(n: int) -> str:
            request = ingest_service_pb2.IngestMessageRequest(
                account_id=load.account_id,
                peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=_peer(n)),
                text=f"ingest {load.tag} {n}",
            )
            await ingest_stubs[n % 2].IngestMessage(request, metadata=metadata, timeout=CALL_TIMEOUT)
            return ""

        return ingest
    send_stubs = [conversation_service_pb2_grpc.ConversationServiceStub(ch) for ch in channels]

    async def send(n: int) -> str:
        text = f"send {load.tag} {n}"
        request = conversation_service_pb2.SendMessageRequest(
            conversation_id=load.room_ids[n % len(load.room_ids)], text=text
        )
        await send_stubs[n % 2].SendMessage(request, metadata=metadata, timeout=CALL_TIMEOUT)
        return text

    return send


class RawHttp:
    """A minimal keep-alive HTTP/1.1 client: httpx's own CPU cost would otherwise dominate the hook
    scenario on a 2-core machine (the gRPC baseline's client is C core), and the ratio would measure it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def connect(cls, base: str) -> RawHttp:
        host, port = base.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer, f"{host}:{port}")

    async def post_form(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        head = [f"POST {path} HTTP/1.1", f"Host: {self.host}", "Content-Type: application/x-www-form-urlencoded"]
        head += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


async def _hook_factory(load: Load, stack: contextlib.AsyncExitStack) -> Callable[[int], Awaitable[str]]:
    from urllib.parse import urlencode

    sys.path.insert(0, str(REPO))
    from convhub.server.channels.twilio import compute_signature

    path = f"/v1.0/hooks/twilio/{load.account_id}"
    connections = []
    for _ in range(load.concurrency):  # one connection per caller: HTTP/1.1 has one request in flight each
        connection = await RawHttp.connect(load.http_base)
        stack.push_async_callback(connection.close)
        connections.append(connection)
    free = asyncio.Queue[RawHttp]()
    for connection in connections:
        free.put_nowait(connection)

    async def hook(n: int) -> str:
        params = [
            ("MessageSid", f"SM{load.tag}{n:020d}"),
            ("From", _peer(n)),
            ("To", SELF_NUMBER),
            ("Body", f"hook {load.tag} {n}"),
            ("NumMedia", "0"),
        ]
        signature = compute_signature(load.auth_token, PUBLIC_URL + path, params)
        connection = await free.get()
        try:
            status, payload = await asyncio.wait_for(
                connection.post_form(path, urlencode(params).encode(), {"X-Twilio-Signature": signature}),
                CALL_TIMEOUT,
            )
        finally:
            free.put_nowait(connection)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")
        return ""

    return hook


# ---------------------------------------------------------------------------
# Server side (main process)
# ---------------------------------------------------------------------------


def seed(database_url: str, grpc_target: str, standin: Any) -> tuple[str, str, str, tuple[str, ...]]:
    """A tenant, a Twilio account on the stand-in, SEEDED_ROOMS rooms: (token, account id, auth token, room ids)."""
    import grpc

    from convhub.server.store.customers import create_customer, create_token
    from convhub.server.store.db import create_db_engine
    from convhub.v1 import account_pb2, account_service_pb2, account_service_pb2_grpc, common_pb2
    from convhub.v1 import ingest_service_pb2 as ingest_pb
    from convhub.v1 import ingest_service_pb2_grpc as ingest_grpc

    engine = create_db_engine(database_url, pool_size=1)
    try:
        token = create_token(engine, create_customer(engine, "bench"), "bench").token
    finally:
        engine.dispose()
    sid, auth_token = standin.new_account()
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(grpc_target) as channel:
        account = account_service_pb2_grpc.AccountServiceStub(channel).CreateAccount(
            account_service_pb2.CreateAccountRequest(
                account=account_pb2.Account(
                    type=account_pb2.ACCOUNT_TYPE_SMS,
                    address=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=SELF_NUMBER),
                    credentials={"account_sid": sid, "auth_token": auth_token},
                )
            ),
            metadata=metadata,
        )
        ingest = ingest_grpc.IngestServiceStub(channel)
        rooms = []
        for i in range(SEEDED_ROOMS):
            result = ingest.IngestMessage(
                ingest_pb.IngestMessageRequest(
                    account_id=account.id,
                    peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=_peer(i)),
                    text="seed",
                ),
                metadata=metadata,
            )
            rooms.append(result.conversation.id)
    return token, account.id, auth_token, tuple(rooms)


def wait_delivered(standin: Any, texts: set[str], timeout: float) -> dict[str, float]:
    """Arrival wall times at the stand-in of `texts`, waiting up to `timeout` for all of them."""
    deadline = time.monotonic() + timeout
    while True:
        with standin._lock:
            arrived = {m["body"]: m["_created"] for m in standin.messages if m["body"] in texts}
        if len(arrived) == len(texts) or time.monotonic() > deadline:
            return arrived
        time.sleep(0.1)


def bench_backend(backend: str, args: argparse.Namespace, pool: ProcessPoolExecutor) -> list[str] | None:
    conftest = grpc_bench._conftest()
    from tests.channel_rig import provider_env
    from tests.twilio_standin import TwilioStandIn

    standin = TwilioStandIn().start()
    with tempfile.TemporaryDirectory(prefix=f"convhub-channels-bench-{backend}-") as tmp:
        db = contextlib.contextmanager(conftest.create_database)(backend, Path(tmp))
        try:
            database_url = db.__enter__()
        except BaseException as exc:  # pytest.skip when PostgreSQL is unreachable
            if isinstance(exc, KeyboardInterrupt):
                raise
            print(f"\n## {backend}: skipped ({exc})")
            return None
        env = provider_env(standin, PUBLIC_URL)
        try:
            server = grpc_bench.start(database_url, Path(tmp), env=env)
            try:
                return _measure(backend, server, database_url, standin, args, pool)
            finally:
                grpc_bench.stop(server)
        finally:
            db.__exit__(None, None, None)
            standin.stop()


def _measure(
    backend: str, server: Any, database_url: str, standin: Any, args: argparse.Namespace, pool: ProcessPoolExecutor
) -> list[str]:
    token, account_id, auth_token, rooms = seed(database_url, server.grpc_target, standin)
    print(
        f"\n## {backend}: server pid {server.proc.pid}, gRPC {server.grpc_target}, REST {server.http_base}", flush=True
    )

    def run(kind: str, tag: str) -> Outcome:
        load = Load(
            kind, server.grpc_target, server.http_base or "", token, account_id, auth_token, rooms,
            args.seconds, args.warmup, args.concurrency, args.rate, tag,
        )  # fmt: skip
        outcome = pool.submit(run_load, load).result(timeout=args.seconds + args.warmup + 180)
        note = f" (first error: {outcome.first_error})" if outcome.errors else ""
        print(
            f"  {kind}: {outcome.rate:,.0f}/s p50 {outcome.p50_ms:.2f} ms p99 {outcome.p99_ms:.2f} ms"
            f" errors {outcome.errors}{note}",
            flush=True,
        )
        return outcome

    ingest = run("ingest", "i")
    hooks = run("hooks", "h")
    closed = run("send_closed", "c")
    arrived = wait_delivered(standin, set(closed.returned_at), timeout=120)
    spans = list(arrived.values()) + list(closed.returned_at.values())
    delivered_rate = len(arrived) / (max(spans) - min(spans)) if len(spans) > 1 and arrived else 0.0
    paced = run("send_paced", "p")
    arrived_paced = wait_delivered(standin, set(paced.returned_at), timeout=60)
    lags = sorted(max(0.0, arrived_paced[t] - paced.returned_at[t]) for t in arrived_paced)
    p50 = grpc_bench._percentile(lags, 0.50) * 1000
    p99 = grpc_bench._percentile(lags, 0.99) * 1000
    ratio = hooks.rate / ingest.rate if ingest.rate else math.nan
    missing = len(paced.returned_at) - len(arrived_paced)
    return [
        f"### {backend}",
        "| scenario | rate | p50 | p99 | ratio / target |",
        "|---|---|---|---|---|",
        f"| (a0) gRPC IngestMessage, existing rooms | {ingest.rate:,.0f}/s | {ingest.p50_ms:.1f} ms"
        f" | {ingest.p99_ms:.1f} ms | 1.00 |",
        f"| (a) signed Twilio hooks, existing rooms | {hooks.rate:,.0f}/s | {hooks.p50_ms:.1f} ms"
        f" | {hooks.p99_ms:.1f} ms | {ratio:.2f} (≥ {HOOK_TARGET}: {'pass' if ratio >= HOOK_TARGET else 'FAIL'}) |",
        f"| (b) SendMessage, {args.concurrency} in flight (API) | {closed.rate:,.0f}/s | {closed.p50_ms:.1f} ms"
        f" | {closed.p99_ms:.1f} ms | |",
        f"| (b) ... delivered to the stand-in | {delivered_rate:,.0f}/s | | |"
        f" {len(arrived)}/{len(closed.returned_at)} arrived |",
        f"| (b') send return -> stand-in receives, {args.rate:g}/s paced | {paced.rate:,.0f}/s | {p50:.1f} ms"
        f" | {p99:.1f} ms | p99 < {P99_TARGET_MS:g} ms: {'pass' if p99 < P99_TARGET_MS else 'FAIL'}"
        f"{f'; {missing} never arrived' if missing else ''} |",
        f"errors: ingest {ingest.errors}, hooks {hooks.errors}, sends {closed.errors + paced.errors}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before each measurement (default 1)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight for (a0), (a), (b)")
    parser.add_argument("--rate", type=float, default=200.0, help="paced sends per second for (b') (default 200)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    grpc_bench.machine_info(backends)
    print(
        f"- load: {args.concurrency} in flight from a separate process; {args.warmup:g} s warm-up + {args.seconds:g} s"
    )
    tables: list[list[str]] = []
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for backend in backends:
            try:
                table = bench_backend(backend, args, pool)
            except RuntimeError as exc:
                if "convhub serve exited" in str(exc):
                    print(f"\n## {backend}: the server failed to start\n{exc}", file=sys.stderr)
                    return 1
                raise
            if table is not None:
                tables.append(table)
    print("\n# Results")
    for table in tables:
        print("\n".join(["", *table]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
