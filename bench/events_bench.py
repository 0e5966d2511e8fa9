#!/usr/bin/env python
"""convhub events benchmark: the real `convhub serve`, subscribers and load in separate processes.

Per backend (server, seeding and machine report shared with grpc_bench.py):

  (a) ingest -> subscriber latency, p50/p99, at a steady --rate ingests/s (open loop) with 1, 100
      and 1,000 concurrent subscribers. Each subscriber follows one conversation
      (`conversation_id` filter, `conversation_message_received` only) and the load round-robins
      over those conversations, so every ingest reaches exactly one subscriber: the UI case of many
      people each watching their own conversation. Latency is from just before the IngestMessage
      call (the time travels in the message text) to the subscriber receiving the event.
  (c) IngestMessage calls/s (closed loop, --concurrency in flight, as grpc_bench's (d)) with 10
      subscribers attached, as a ratio to the same load with none, measured in the same run:
      10 subscribers receiving every event, then 10 receiving only `conversation_message_received`.
  (d) the server's RSS with 1,000 idle subscriptions open, next to its RSS before.

Targets (issue 7): p99 < 50 ms at 100 subscribers and < 250 ms at 1,000; (c) >= 0.8; (d) < 300 MB.
Benchmarks never fail CI: the exit code is 0 unless a server fails to start.

    python bench/events_bench.py [--seconds 10] [--rate 200] [--subscribers 1,100,1000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import grpc_bench
from grpc_bench import CALL_TIMEOUT, SELF_NUMBER, Result, _percentile, proc_status_mb

LATENCY_TARGETS_MS = {100: 50.0, 1000: 250.0}
INGEST_RATIO_TARGET = 0.8
RSS_TARGET_MB = 300.0
STREAMS_PER_CHANNEL = 100  # subscriptions per HTTP/2 connection in the subscriber process
WATCH_PEER_BASE = 3_000_000  # watched rooms: +1555 3000000 ...
RECEIVED = 13  # EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED


# ---------------------------------------------------------------------------
# Subscriber process
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscribers:
    """A set of SubscribeEvents streams, picklable for the subscriber process."""

    target: str
    token: str
    conversation_ids: tuple[str, ...]  # one stream per id; "" = no conversation filter
    received_only: bool
    hold_seconds: float  # how long to keep them open after all are open
    settle: float = 1.0  # after opening, before `ready` is set


@dataclass
class SubscriberReport:
    opened: int
    events: int
    latencies_ms: list[float] = field(default_factory=list)
    received: dict[str, float] = field(default_factory=dict)  # message text (its send time) -> time.time() seen
    errors: list[str] = field(default_factory=list)
    cpu_share: float = 0.0  # this process's CPU time / wall time while the load ran: is the measuring side busy?


def run_subscribers(spec: Subscribers, ready: Any, stop: Any = None) -> SubscriberReport:
    """Entry point in the subscriber process: open the streams, set `ready`, read for hold_seconds (or until
    `stop`, a multiprocessing Event, is set)."""
    return asyncio.run(_subscribers(spec, ready, stop))


async def _subscribers(spec: Subscribers, ready: Any, stop: Any = None) -> SubscriberReport:
    import grpc

    from convhub.v1 import event_service_pb2, event_service_pb2_grpc

    report = SubscriberReport(opened=0, events=0)
    errors: Counter[str] = Counter()
    metadata = (("authorization", f"Bearer {spec.token}"),)
    channels = [
        grpc.aio.insecure_channel(spec.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(max(1, -(-len(spec.conversation_ids) // STREAMS_PER_CHANNEL)))
    ]
    calls = []
    for i, conversation_id in enumerate(spec.conversation_ids):
        stub = event_service_pb2_grpc.EventServiceStub(channels[i // STREAMS_PER_CHANNEL])
        request = event_service_pb2.SubscribeEventsRequest(
            conversation_id=conversation_id, event_types=[RECEIVED] if spec.received_only else []
        )
        calls.append(stub.SubscribeEvents(request, metadata=metadata))

    async def read(call: Any) -> None:
        try:
            async for response in call:
                now = time.time()
                for event in response.events:
                    report.events += 1
                    if event.type == RECEIVED:
                        with contextlib.suppress(ValueError):
                            report.latencies_ms.append((now - float(event.message.text)) * 1000)
                            report.received[event.message.text] = now
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.CANCELLED:
                errors[f"{err.code().name}: {err.details()}"] += 1
        except asyncio.CancelledError:
            pass

    readers = [asyncio.create_task(read(call)) for call in calls]
    for ch in channels:
        await asyncio.wait_for(ch.channel_ready(), CALL_TIMEOUT)
    report.opened = len(calls)
    await asyncio.sleep(spec.settle)  # every stream registered with the server's broadcaster by then
    ready.set()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if stop is None:
        await asyncio.sleep(spec.hold_seconds)
    else:
        await asyncio.to_thread(stop.wait, spec.hold_seconds)
    report.cpu_share = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    for ch in channels:
        await ch.close(None)
    report.errors = [f"{n}x {msg}" for msg, n in errors.most_common(5)]
    return report


# ---------------------------------------------------------------------------
# Steady-rate load process
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SteadyLoad:
    target: str
    token: str
    peers: tuple[str, ...]  # round-robin over these rooms
    rate: float
    seconds: float


def run_steady_load(load: SteadyLoad) -> tuple[Result, dict[str, float]]:
    """Entry point in the load process: `rate` ingests/s on a fixed schedule (open loop) for `seconds`.

    Also returns when each call was answered, by message text (time.time()).
    """
    return asyncio.run(_steady_load(load))


async def _steady_load(load: SteadyLoad) -> tuple[Result, dict[str, float]]:
    import grpc

    from convhub.v1 import common_pb2, ingest_service_pb2, ingest_service_pb2_grpc

    metadata = (("authorization", f"Bearer {load.token}"),)
    latencies: list[float] = []
    answered: dict[str, float] = {}
    errors: Counter[str] = Counter()
    async with grpc.aio.insecure_channel(load.target) as ch:
        stub = ingest_service_pb2_grpc.IngestServiceStub(ch)
        ours = common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=SELF_NUMBER)

        async def one(peer: str) -> None:
            t0 = time.perf_counter()
            request = ingest_service_pb2.IngestMessageRequest(
                channel=common_pb2.CONVERSATION_TYPE_MESSAGE,
                self=ours,
                peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=peer),
                text=f"{time.time():.6f}",
            )
            try:
                await stub.IngestMessage(request, metadata=metadata, timeout=CALL_TIMEOUT)
            except grpc.RpcError as err:
                errors[f"{err.code().name}: {err.details()}"] += 1
                return
            latencies.append(time.perf_counter() - t0)
            answered[request.text] = time.time()

        start = time.perf_counter()
        total = int(load.rate * load.seconds)
        tasks = []
        for i in range(total):
            delay = start + i / load.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(load.peers[i % len(load.peers)])))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return Result(
        name="steady ingest",
        kind="steady",
        calls=len(latencies),
        seconds=elapsed,
        p50_ms=_percentile(latencies, 0.5) * 1000,
        p99_ms=_percentile(latencies, 0.99) * 1000,
        errors=sum(errors.values()),
        error_samples=[f"{n}x {msg}" for msg, n in errors.most_common(5)],
    ), answered


# ---------------------------------------------------------------------------
# Main process
# ---------------------------------------------------------------------------


@dataclass
class LatencyRow:
    subscribers: int
    p50_ms: float
    p99_ms: float
    delivered: int
    sent: int
    ingest_p99_ms: float
    after_answer_p99_ms: float  # receipt minus the ingest call's answer: the delivery path alone
    errors: list[str]
    subscriber_cpu: float  # the subscriber process's CPU share (1.0 = one core) while it held the streams


@dataclass
class EventsReport:
    backend: str
    latency: list[LatencyRow] = field(default_factory=list)
    ingest: dict[str, Result] = field(default_factory=dict)
    idle_rss_mb: float = 0.0
    subscribed_rss_mb: float = 0.0
    rss_subscriptions: int = 0


def watched_rooms(target: str, token: str, count: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`count` rooms to watch (opened by one ingest each): their peers and conversation ids."""
    import grpc

    from tests.support import Api

    peers = tuple(f"+1555{WATCH_PEER_BASE + i:07d}" for i in range(count))
    with grpc.insecure_channel(target) as channel:
        api = Api.for_tenant(channel, (("authorization", f"Bearer {token}"),))
        ids = tuple(api.sms(peer=peer, self_=SELF_NUMBER, text="open").conversation.id for peer in peers)
    return peers, ids


def with_subscribers(
    pool: ProcessPoolExecutor, manager: Any, spec: Subscribers, work: Any
) -> tuple[SubscriberReport, Any]:
    """Open `spec`'s subscriptions in their process, run `work()` once they are open, return both results."""
    ready = manager.Event()
    subscribed = pool.submit(run_subscribers, spec, ready)
    if not ready.wait(timeout=120):
        raise RuntimeError(
            f"subscriptions did not open: {subscribed.exception(timeout=1) if subscribed.done() else '?'}"
        )
    outcome = work()
    return subscribed.result(timeout=spec.hold_seconds + 120), outcome


def bench_backend(
    backend: str, args: argparse.Namespace, pool: ProcessPoolExecutor, manager: Any
) -> EventsReport | None:
    with (
        tempfile.TemporaryDirectory(prefix=f"convhub-events-bench-{backend}-") as tmp,
        grpc_bench.fresh_database(backend, Path(tmp)) as database_url,
    ):
        if database_url is None:
            return None
        server = grpc_bench.start(database_url, Path(tmp))
        try:
            return measure(backend, server, database_url, args, pool, manager)
        finally:
            grpc_bench.stop(server)


def measure(
    backend: str,
    server: grpc_bench.Server,
    database_url: str,
    args: argparse.Namespace,
    pool: ProcessPoolExecutor,
    manager: Any,
) -> EventsReport:
    pid = server.proc.pid
    report = EventsReport(backend)
    time.sleep(0.5)
    report.idle_rss_mb = proc_status_mb(pid, "VmRSS")
    seeded = grpc_bench.seed(database_url, server.grpc_target)
    most = max(args.subscribers)
    peers, rooms = watched_rooms(server.grpc_target, seeded.token, most)
    print(f"\n## {backend}: server pid {pid}, gRPC {server.grpc_target}", flush=True)
    hold = args.warmup + args.seconds + 3
    profile_dir: Path | None = None
    if args.profile:
        profile_dir = Path(args.profile) / backend
        profile_dir.mkdir(parents=True, exist_ok=True)

    # (a) latency at a steady rate
    for n in args.subscribers:
        spec = Subscribers(server.grpc_target, seeded.token, rooms[:n], received_only=True, hold_seconds=hold)
        load = SteadyLoad(server.grpc_target, seeded.token, peers[:n], args.rate, args.seconds)
        with grpc_bench.profiler(pid, profile_dir, f"latency-{n}", args.seconds, 0.0):
            subs, (sent, answered) = with_subscribers(
                pool,
                manager,
                spec,
                lambda load=load: pool.submit(run_steady_load, load).result(timeout=args.seconds + 120),
            )
        lat = sorted(subs.latencies_ms)
        after = sorted((seen - answered[text]) * 1000 for text, seen in subs.received.items() if text in answered)
        row = LatencyRow(
            n,
            _percentile(lat, 0.5),
            _percentile(lat, 0.99),
            len(lat),
            sent.calls,
            sent.p99_ms,
            _percentile(after, 0.99),
            [*subs.errors, *sent.error_samples],
            subs.cpu_share,
        )
        report.latency.append(row)
        print(
            f"  (a) {n} subscribers: p50 {row.p50_ms:.1f} ms p99 {row.p99_ms:.1f} ms,"
            f" {row.delivered}/{row.sent} delivered, ingest p99 {row.ingest_p99_ms:.1f} ms,"
            f" after the answer p99 {row.after_answer_p99_ms:.1f} ms,"
            f" subscriber process CPU {row.subscriber_cpu:.0%} of a core",
            flush=True,
        )

    if args.latency_only:
        return report

    # (c) ingest throughput with and without subscribers, alternating so drift hits both
    ingest = grpc_bench.scenario("(c) IngestMessage", "ingest_existing", server.grpc_target, seeded, args)
    plan = [("none", None), ("10 all events", False), ("10 received only", True), ("none again", None)]
    for label, received_only in plan:
        if received_only is None:
            result = grpc_bench.run_in(pool, ingest, args)
        else:
            spec = Subscribers(server.grpc_target, seeded.token, ("",) * 10, received_only, hold_seconds=hold)
            _, result = with_subscribers(pool, manager, spec, lambda: grpc_bench.run_in(pool, ingest, args))
        report.ingest[label] = result
        print(f"  (c) ingest, subscribers {label}: {result.rate:,.0f}/s errors {result.errors}", flush=True)

    # (d) RSS with idle subscriptions (no events flow while they are open)
    spec = Subscribers(server.grpc_target, seeded.token, rooms[:most], received_only=True, hold_seconds=2, settle=2)
    report.rss_subscriptions = most
    before = proc_status_mb(pid, "VmRSS")
    subs, report.subscribed_rss_mb = with_subscribers(pool, manager, spec, lambda: proc_status_mb(pid, "VmRSS"))
    print(
        f"  (d) {subs.opened} idle subscriptions: server RSS {report.subscribed_rss_mb:.0f} MB"
        f" (before {before:.0f} MB, idle at start {report.idle_rss_mb:.0f} MB)",
        flush=True,
    )
    return report


def print_report(report: EventsReport) -> None:
    print(f"\n### {report.backend}\n")
    print(
        "| (a) subscribers | p50 ms | p99 ms | target p99 | delivered / sent | ingest p99 ms"
        " | after answer p99 ms | subscriber CPU | pass |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:-:|")
    for row in report.latency:
        target = LATENCY_TARGETS_MS.get(row.subscribers)
        ok = "-" if target is None else ("yes" if row.p99_ms < target and row.delivered == row.sent else "NO")
        print(
            f"| {row.subscribers} | {row.p50_ms:.1f} | {row.p99_ms:.1f} | {target or '-'} |"
            f" {row.delivered} / {row.sent} | {row.ingest_p99_ms:.1f} |"
            f" {row.after_answer_p99_ms:.1f} | {row.subscriber_cpu:.0%} | {ok} |"
        )
    if report.ingest:  # not with --latency-only
        base = [r.rate for k, r in report.ingest.items() if k.startswith("none")]
        ceiling = sum(base) / len(base) if base else float("nan")
        print("\n| (c) ingest with subscribers | calls/s | ratio to none | target | pass |")
        print("|---|---:|---:|---:|:-:|")
        for label, result in report.ingest.items():
            ratio = result.rate / ceiling if ceiling else float("nan")
            attached = not label.startswith("none")
            verdict = ("yes" if ratio >= INGEST_RATIO_TARGET else "NO") if attached else "-"
            target = f">= {INGEST_RATIO_TARGET}" if attached else "-"
            print(f"| {label} | {result.rate:,.0f} | {ratio:.2f} | {target} | {verdict} |")
        ok = "yes" if report.subscribed_rss_mb < RSS_TARGET_MB else "NO"
        print(
            f"\n(d) server RSS with {report.rss_subscriptions} idle subscriptions: {report.subscribed_rss_mb:.0f} MB"
            f" (idle at start {report.idle_rss_mb:.0f} MB; target < {RSS_TARGET_MB:.0f} MB: {ok})"
        )
    errors = [e for row in report.latency for e in row.errors] + [
        s for r in report.ingest.values() for s in r.error_samples
    ]
    if errors:
        print("\nErrors (must be 0):")
        for e in errors:
            print(f"  {e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement time per scenario (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before each (c) measurement (default 1)")
    parser.add_argument("--rate", type=float, default=200.0, help="steady ingests/s for (a) (default 200)")
    parser.add_argument("--subscribers", default="1,100,1000", help="subscriber counts for (a); the largest is (d)'s")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=32, help="(c): ingest calls in flight (default 32)")
    parser.add_argument("--channels", type=int, default=2, help="(c): gRPC channels of the load process")
    parser.add_argument("--latency-only", action="store_true", help="run (a) only, skipping (c) and (d)")
    parser.add_argument("--profile", metavar="DIR", help="sample the server with py-spy during each (a) run into DIR")
    args = parser.parse_args(argv)
    args.subscribers = [int(n) for n in args.subscribers.split(",") if n.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    grpc_bench.machine_info(backends, "convhub events benchmark")
    print(
        f"- events: (a) {args.rate:g} ingests/s for {args.seconds:g} s per subscriber count {args.subscribers};"
        f" (c) {args.concurrency} ingests in flight, {args.warmup:g} s warm-up + {args.seconds:g} s;"
        " load, subscribers and server in three processes"
    )
    with multiprocessing.get_context("spawn").Manager() as manager:
        reports = grpc_bench.run_backends(
            backends, lambda backend, pool: bench_backend(backend, args, pool, manager), processes=2
        )
    if reports is None:
        return 1
    print("\n# Results")
    for report in reports:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
