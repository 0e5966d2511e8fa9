#!/usr/bin/env python
"""convhub webhook benchmark: the real `convhub serve`, a loopback receiver that answers at once.

For each backend (SQLite, PostgreSQL), with the server started exactly as a user would
(via `tests.conftest.start_server`, webhook settings allowing 127.0.0.1/32):

  (b) deliveries/s: a backlog of `--events` message events is built while the endpoint is
      disabled, then the endpoint is enabled and the time until the receiver has every event
      is measured (fan-out + signing + POST + recording, 100 conversations so that ordering
      does not serialise them). Compared with plain httpx POSTs/s of the same body to the same
      receiver, with as many in flight as the emitter allows per endpoint (16, over 4 clients),
      measured in the same run from a separate process.
  (c) IngestMessage calls/s into 100 existing rooms for a tenant with one webhook endpoint and
      10 live SubscribeEvents streams (every event, drained by a separate process) attached, its
      deliveries running meanwhile, as a ratio to the same load for a tenant with neither (issue 7
      (c)); both on the same server, in `--rounds` pairs of alternating order (none, with, then with,
      none, ...) so that drift (a growing database, a neighbour's load) hits both alike; a phase with
      the endpoint is followed by a wait until its deliveries have drained.

Ratios, not absolute rates, are the result (DESIGN.md, "Performance notes"). Targets: (b) >= 0.6,
(c) >= 0.8. Benchmarks never fail CI: the exit code is 0 unless a server fails to start.

    python bench/webhooks_bench.py [--seconds 10] [--events 3000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO)]

import events_bench  # noqa: E402  (the subscriber process)
import grpc_bench  # noqa: E402  (shared server start/stop, seeding, load generator, machine info)

DELIVERY_TARGET = 0.60
INGEST_TARGET = 0.80
PER_ENDPOINT_IN_FLIGHT = 16  # the emitter's per-endpoint bound (server/events/webhooks/emitter.py)
SUBSCRIBERS = 10  # issue 7 (c): "one webhook endpoint and 10 subscribers"
PLAIN_CLIENTS = 4  # the ceiling spreads them over a few httpx clients, as the emitter does (DESIGN.md)
SAMPLE_BODY = (
    b'{"type":"conversation_message_created","timestamp":"2026-01-01T00:00:00.000000Z","data":{"id":'
    b'"00000000-0000-4000-8000-000000000000","text":"' + b"x" * 500 + b'"}}'
)


# ---------------------------------------------------------------------------
# The receiver (its own process): 200 at once, counts POSTs, GET /count reports


def run_receiver(port_queue: Any) -> None:
    import socket

    import uvicorn

    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        if scope["type"] != "http":
            return
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
        body = b"ok"
        if scope["method"] == "POST":
            count += 1
        else:
            body = str(count).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets it recognises as TCP (see server/app.py).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port_queue.put(sock.getsockname()[1])
    config = uvicorn.Config(app, access_log=False, lifespan="off", log_level="warning")
    uvicorn.Server(config).run(sockets=[sock])


@contextlib.contextmanager
def receiver() -> Iterator[tuple[str, int]]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=run_receiver, args=(queue,), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{queue.get(timeout=30)}", proc.pid or 0
    finally:
        proc.terminate()
        proc.join(10)


def received(url: str) -> int:
    import httpx

    return int(httpx.get(url + "/count", timeout=10).text)


# ---------------------------------------------------------------------------
# Ceiling: plain httpx POSTs (runs in the spawned load process)


def plain_posts(url: str, seconds: float, in_flight: int) -> float:
    """POSTs/s of SAMPLE_BODY with `in_flight` concurrent requests spread over PLAIN_CLIENTS httpx clients."""

    async def run() -> float:
        import httpx

        per_client = max(1, in_flight // PLAIN_CLIENTS)
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        async with contextlib.AsyncExitStack() as stack:
            clients = [
                await stack.enter_async_context(httpx.AsyncClient(limits=limits, timeout=10))
                for _ in range(PLAIN_CLIENTS)
            ]
            done = 0
            start = time.perf_counter()
            deadline = start + seconds

            async def worker(client: httpx.AsyncClient) -> None:
                nonlocal done
                while time.perf_counter() < deadline:
                    response = await client.post(url + "/plain", content=SAMPLE_BODY)
                    response.raise_for_status()
                    done += 1

            await asyncio.gather(*(worker(clients[i % PLAIN_CLIENTS]) for i in range(in_flight)))
            return done / (time.perf_counter() - start)

    return asyncio.run(run())


# ---------------------------------------------------------------------------
# Measurements against the server


@dataclass
class Report:
    backend: str
    plain_posts: float
    deliveries: float
    delivery_events: int
    ingest_none: list[Phase]  # one per round
    ingest_with: list[Phase]
    subscribed_events: int


@dataclass
class Phase:
    """One ingest load phase of (c): its result, the API process's CPU per call, the webhook lag it left."""

    result: grpc_bench.Result
    api_ms_per_call: float
    pending_after: int
    drain_seconds: float


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _webhooks_stub(grpc_target: str, token: str) -> tuple[Any, Any]:
    import grpc

    from convhub.v1 import webhook_service_pb2_grpc

    channel = grpc.insecure_channel(grpc_target)
    return channel, webhook_service_pb2_grpc.WebhookServiceStub(channel)


def webhook_process(server: grpc_bench.Server) -> int | None:
    """The pid of `serve`'s webhook worker process (CONVHUB_WEBHOOK_WORKER=process, the default), if any."""
    for pid in grpc_bench.child_pids(server.proc.pid):
        with contextlib.suppress(OSError):
            if b"webhook-worker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def cpu_seconds(*pids: int | None) -> list[float]:
    """CPU seconds each process has used so far (0 for None)."""
    return [grpc_bench.proc_cpu_seconds(pid) if pid else 0.0 for pid in pids]


def machine_busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far (/proc/stat)."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(ticks)
    return total - ticks[3] - ticks[4], total  # idle, iowait


def process_labels(server: grpc_bench.Server, receiver_pid: int) -> dict[int, str]:
    """Names for the processes a phase involves: the server's two, the receiver, this benchmark's load processes."""
    labels = dict.fromkeys(grpc_bench.descendants(os.getpid()), "bench load/subscribers")
    labels |= {os.getpid(): "bench", receiver_pid: "receiver", server.proc.pid: "API"}
    hooks = webhook_process(server)
    if hooks:
        labels[hooks] = "webhook process"
    return labels


@contextlib.contextmanager
def where_cpu_goes(labelled: Callable[[], dict[int, str]]) -> Iterator[None]:
    """Print the cores each process group used over the block: pids named by `labelled()` (asked at the end, so
    processes started meanwhile, such as the pool's load process on first use, are named too), the rest by
    command name."""
    before, wall = grpc_bench.cpu_by_process(), time.perf_counter()
    yield
    after, wall, labels = grpc_bench.cpu_by_process(), time.perf_counter() - wall, labelled()
    groups = grpc_bench.cpu_by_group(before, after, lambda pid, name: labels.get(pid, name))
    shares = sorted(((cpu / wall, group) for group, cpu in groups.items() if cpu / wall >= 0.01), reverse=True)
    print("      cores used: " + ", ".join(f"{group} {share:.2f}" for share, group in shares), flush=True)


@contextlib.contextmanager
def server_cpu(server: grpc_bench.Server) -> Iterator[list[float]]:
    """[API process CPU s, wall s, webhook process CPU s, machine busy cores] over the block, filled in at its end."""
    out: list[float] = []
    pids = (server.proc.pid, webhook_process(server))
    cpu, wall, machine = cpu_seconds(*pids), time.perf_counter(), machine_busy()
    yield out
    api, hooks = (after - before for after, before in zip(cpu_seconds(*pids), cpu, strict=True))
    busy, total = (after - before for after, before in zip(machine_busy(), machine, strict=True))
    out.extend((api, time.perf_counter() - wall, hooks, (os.cpu_count() or 1) * busy / max(total, 1)))


def api_ms_per_call(cpu: list[float], result: grpc_bench.Result) -> float:
    used, wall, _, _ = cpu
    calls = result.rate * wall
    return 1000 * used / calls if calls else float("nan")


def per_call(cpu: list[float], result: grpc_bench.Result) -> str:
    """Server CPU per call over the whole load phase (warm-up included: calls estimated at the measured rate).

    Less noisy than rates on a shared machine: compare these between phases and runs.
    """
    used, wall, hooks, machine = cpu
    if not result.rate:
        return ""
    return (
        f"API process CPU {used / wall:.0%} of a core, {api_ms_per_call(cpu, result):.2f} ms per call;"
        f" webhook process {hooks / wall:.0%} of a core; machine {machine:.1f} of {os.cpu_count()} cores busy"
    )


@contextlib.contextmanager
def sampling(pid: int, out_dir: Path | None, name: str) -> Iterator[None]:
    """Optionally sample the server with py-spy (every thread, raw collapsed stacks) until the block ends."""
    if out_dir is None or shutil.which("py-spy") is None:
        yield
        return
    out = out_dir / f"{name}.txt"
    # --gil: only the thread holding the GIL, i.e. where the (GIL-bound) server spends its CPU.
    cmd = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--nonblocking", "--gil", "--rate", "200"]
    cmd += ["-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            print(f"    profile: {out}")
            grpc_bench.summarize_profile(out)


def measure_deliveries(
    server: grpc_bench.Server, seeded: grpc_bench.Seeded, url: str, events: int, profile: Path | None = None
) -> float:
    """Deliveries/s draining a backlog of `events` message events (built while the endpoint was disabled)."""
    from convhub.v1 import webhook_pb2, webhook_service_pb2
    from tests.support import Api

    md = (("authorization", f"Bearer {seeded.token}"),)
    channel, stub = _webhooks_stub(server.grpc_target, seeded.token)
    with channel:
        endpoint = stub.CreateWebhookEndpoint(
            webhook_service_pb2.CreateWebhookEndpointRequest(
                webhook_endpoint=webhook_pb2.WebhookEndpoint(url=url + "/hook", disabled=True)
            ),
            metadata=md,
        )
        api = Api.for_tenant(channel, md)
        for i in range(events):
            peer = f"+1555{grpc_bench.ROOM_PEER_BASE + i % grpc_bench.SEEDED_ROOMS:07d}"
            api.sms(peer=peer, self_=grpc_bench.SELF_NUMBER, text=f"backlog {i}")
        before = received(url)
        # Where the deliveries' work runs: the webhook process when there is one.
        with server_cpu(server) as cpu, sampling(webhook_process(server) or server.proc.pid, profile, "deliveries"):
            start = time.perf_counter()
            stub.UpdateWebhookEndpoint(
                webhook_service_pb2.UpdateWebhookEndpointRequest(
                    webhook_endpoint=webhook_pb2.WebhookEndpoint(id=endpoint.id, disabled=False),
                    update_mask={"paths": ["disabled"]},
                ),
                metadata=md,
            )
            deadline = start + max(120.0, events / 20)
            while received(url) - before < events and time.perf_counter() < deadline:
                time.sleep(0.02)
            got = received(url) - before
            elapsed = time.perf_counter() - start
        api, _, hooks, _ = cpu
        print(f"    CPU while draining: API process {api:.1f} s, webhook process {hooks:.1f} s, in {elapsed:.1f} s")
        return got / elapsed


def attach_endpoint(server: grpc_bench.Server, seeded: grpc_bench.Seeded, url: str) -> None:
    from convhub.v1 import webhook_pb2, webhook_service_pb2

    channel, stub = _webhooks_stub(server.grpc_target, seeded.token)
    with channel:
        stub.CreateWebhookEndpoint(
            webhook_service_pb2.CreateWebhookEndpointRequest(
                webhook_endpoint=webhook_pb2.WebhookEndpoint(url=url + "/attached")
            ),
            metadata=(("authorization", f"Bearer {seeded.token}"),),
        )


def pending_deliveries(database_url: str, customer_id: str) -> int:
    """Deliveries not yet sent for the customer's endpoints: pending rows plus events not fanned out yet."""
    from sqlalchemy import func, select

    from convhub.server.store.db import create_db_engine
    from convhub.server.store.models import Customer, WebhookDelivery, WebhookEndpoint

    deliveries, endpoints, customers = WebhookDelivery.__table__, WebhookEndpoint.__table__, Customer.__table__
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = select(func.count()).where(deliveries.c.customer_id == customer_id, deliveries.c.status == "pending")
            behind = (
                select(func.coalesce(func.sum(customers.c.event_seq - endpoints.c.cursor), 0))
                .join(customers, customers.c.id == endpoints.c.customer_id)
                .where(endpoints.c.customer_id == customer_id, endpoints.c.tm_delete.is_(None))
            )
            return int(conn.execute(rows).scalar_one()) + int(conn.execute(behind).scalar_one())
    finally:
        engine.dispose()


def drain_after_load(database_url: str, customer_id: str, timeout: float = 120.0) -> tuple[int, float]:
    """(deliveries still pending when the ingest load ended, seconds until none were): the webhooks' lag.

    A short settle first, so events fanned out just after the load are counted as pending.
    """
    time.sleep(0.3)
    start = time.perf_counter()
    left = pending_deliveries(database_url, customer_id)
    while pending_deliveries(database_url, customer_id) and time.perf_counter() - start < timeout:
        time.sleep(0.05)
    return left, time.perf_counter() - start


def ingest_load(
    pool: ProcessPoolExecutor, server: grpc_bench.Server, seeded: grpc_bench.Seeded, args: argparse.Namespace, tag: str
) -> grpc_bench.Result:
    sc = grpc_bench.Scenario(
        name=tag,
        kind="ingest_existing",
        target=server.grpc_target,
        token=seeded.token,
        conversation_id=seeded.conversation_id,
        seconds=args.seconds,
        warmup=args.warmup,
        concurrency=args.concurrency,
        channels=2,
        run_tag=f"{tag}-{os.getpid()}-{time.time_ns()}",
    )
    return pool.submit(grpc_bench.run_scenario, sc).result(timeout=args.seconds + args.warmup + 180)


def bench_backend(backend: str, args: argparse.Namespace, pool: ProcessPoolExecutor, manager: Any) -> Report | None:
    with (
        tempfile.TemporaryDirectory(prefix=f"convhub-whbench-{backend}-") as tmp,
        grpc_bench.fresh_database(backend, Path(tmp)) as database_url,
    ):
        if database_url is None:
            return None
        server = grpc_bench.start(database_url, Path(tmp))
        try:
            with receiver() as (url, receiver_pid):
                print(f"\n## {backend}: server pid {server.proc.pid}, receiver {url}", flush=True)
                plain = pool.submit(plain_posts, url, args.seconds, PER_ENDPOINT_IN_FLIGHT).result()
                print(f"  plain httpx POSTs, {PER_ENDPOINT_IN_FLIGHT} in flight: {plain:,.0f}/s", flush=True)
                backlog = grpc_bench.seed(database_url, server.grpc_target)
                profile = Path(args.profile) / backend if args.profile else None
                if profile is not None:
                    profile.mkdir(parents=True, exist_ok=True)
                rate = measure_deliveries(server, backlog, url, args.events, profile)
                print(f"  (b) webhook deliveries: {rate:,.0f}/s", flush=True)
                none = grpc_bench.seed(database_url, server.grpc_target)
                attached = grpc_bench.seed(database_url, server.grpc_target)
                attach_endpoint(server, attached, url)
                # The subscribers stay open through every round (idle while the other tenant is loaded),
                # in their own process, until `stop` is set.
                longest = args.rounds * 2 * (args.warmup + args.seconds + 130) + 60
                spec = events_bench.Subscribers(server.grpc_target, attached.token, ("",) * SUBSCRIBERS, False, longest)
                ready, stop = manager.Event(), manager.Event()
                subscribed = pool.submit(events_bench.run_subscribers, spec, ready, stop)
                if not ready.wait(timeout=120):
                    raise RuntimeError(f"subscriptions did not open: {subscribed.exception(timeout=1)}")
                phases: dict[str, list[Phase]] = {"none": [], "with": []}
                labels = functools.partial(process_labels, server, receiver_pid)
                for round_no in range(args.rounds):
                    # Alternating order (none, with, then with, none, ...): drift hits both alike.
                    for kind in ("none", "with") if round_no % 2 == 0 else ("with", "none"):
                        tag = f"ingest_{kind}" if round_no == 0 else f"ingest_{kind}_{round_no + 1}"
                        tenant = none if kind == "none" else attached
                        with (
                            sampling(server.proc.pid, profile if round_no == 0 else None, tag),
                            server_cpu(server) as cpu,
                            where_cpu_goes(labels),
                        ):
                            result = ingest_load(pool, server, tenant, args, f"ingest, {kind}")
                        what = "no endpoint" if kind == "none" else f"one endpoint + {SUBSCRIBERS} subscribers"
                        print(
                            f"  round {round_no + 1}, ingest, {what}: {result.rate:,.0f}/s, {per_call(cpu, result)}",
                            flush=True,
                        )
                        left, drained = (0, 0.0)
                        if kind == "with":  # let its deliveries drain, so the next phase starts quiet
                            left, drained = drain_after_load(database_url, attached.customer_id)
                            print(f"      pending when the load ended: {left}, all sent {drained:.1f} s later")
                        phases[kind].append(Phase(result, api_ms_per_call(cpu, result), left, drained))
                stop.set()
                subs = subscribed.result(timeout=120)
                print(f"      {subs.opened} subscribers received {subs.events} events {subs.errors or ''}", flush=True)
                return Report(backend, plain, rate, args.events, phases["none"], phases["with"], subs.events)
        finally:
            grpc_bench.stop(server)


def print_table(r: Report) -> None:
    b = r.deliveries / r.plain_posts if r.plain_posts else float("nan")
    none = mean([p.result.rate for p in r.ingest_none])
    with_ = mean([p.result.rate for p in r.ingest_with])
    c = with_ / none if none else float("nan")
    rounds = ", ".join(
        f"{w.result.rate / n.result.rate:.2f}" for n, w in zip(r.ingest_none, r.ingest_with, strict=True)
    )
    print(f"\n### {r.backend}\n")
    print("| measurement | rate/s | ratio | target | pass? |")
    print("|---|---:|---:|---|---|")
    print(
        f"| plain httpx POSTs to the receiver ({PER_ENDPOINT_IN_FLIGHT} in flight, {PLAIN_CLIENTS} clients)"
        f" | {r.plain_posts:,.0f} | | | |"
    )
    print(
        f"| (b) webhook deliveries ({r.delivery_events} events, one endpoint) | {r.deliveries:,.0f} | {b:.2f}"
        f" | >= {DELIVERY_TARGET:.2f} | {'yes' if b >= DELIVERY_TARGET else 'NO'} |"
    )
    print(f"| IngestMessage, no endpoint (mean of {len(r.ingest_none)} rounds) | {none:,.0f} | | | |")
    errors = sum(p.result.errors for p in r.ingest_none + r.ingest_with)
    verdict = ("yes" if c >= INGEST_TARGET else "NO") + (f" ({errors} errors!)" if errors else "")
    print(
        f"| (c) IngestMessage, one endpoint + {SUBSCRIBERS} subscribers attached (mean) | {with_:,.0f} | {c:.2f}"
        f" | >= {INGEST_TARGET:.2f} | {verdict} |"
    )
    print(f"\n(c) by round: {rounds}.")
    cpu_none = mean([p.api_ms_per_call for p in r.ingest_none])
    cpu_with = mean([p.api_ms_per_call for p in r.ingest_with])
    print(f"API process CPU per call: {cpu_none:.2f} ms without, {cpu_with:.2f} ms with (mean).")
    p99_none = mean([p.result.p99_ms for p in r.ingest_none])
    p99_with = mean([p.result.p99_ms for p in r.ingest_with])
    print(
        f"Ingest p99: {p99_none:.1f} ms without, {p99_with:.1f} ms with the endpoint and subscribers (mean);"
        f" the {SUBSCRIBERS} subscribers received {r.subscribed_events} events in all."
    )
    left = max(p.pending_after for p in r.ingest_with)
    drained = max(p.drain_seconds for p in r.ingest_with)
    print(f"Webhook lag after (c): at most {left} deliveries pending when a load ended, sent {drained:.1f} s later.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time per load phase (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before each ingest phase (default 1)")
    parser.add_argument("--events", type=int, default=3000, help="backlog size for (b) (default 3000)")
    parser.add_argument("--concurrency", type=int, default=32, help="ingest calls in flight (default 32)")
    parser.add_argument("--rounds", type=int, default=4, help="(c): none/with pairs, alternating order (default 4)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--profile", metavar="DIR", help="sample the server with py-spy per phase into DIR")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    # The server reads these from its environment (start_server passes ours on).
    os.environ["CONVHUB_WEBHOOK_ALLOWED_NETWORKS"] = "127.0.0.1/32"
    grpc_bench.machine_info(backends, "convhub webhook benchmark")
    # Two load processes: the subscribers stay open while the ingest load runs in the other.
    with multiprocessing.get_context("spawn").Manager() as manager:
        reports = grpc_bench.run_backends(
            backends, lambda backend, pool: bench_backend(backend, args, pool, manager), processes=2
        )
    if reports is None:
        return 1
    print("\n# Results")
    for report in reports:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
