#!/usr/bin/env python
"""convhub web chat benchmark: the round trip from a visitor's post to an internal subscriber, per backend.

For each backend: start the real server (grpc_bench's `start`), create a tenant and a web chat
account, open a visitor session, and hold one gRPC SubscribeEvents stream on the visitor's
conversation (message_received events). Then, one message in flight at a time:

  (a0) gRPC IngestMessage from the visitor's address into the same room   (the ceiling)
  (a)  visitor POST /v1.0/webchat/messages with the visitor token          ratio to (a0)

Latency is from just before the call to the subscriber holding the event: p50 / p99, bounded by
--count messages per scenario (default 300, each waiting at most 10 s). The server runs with a
visitor rate limit high enough not to interfere. Never fails CI (exit 0 unless a server fails to start).

    python bench/webchat_bench.py [--count 300] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import grpc_bench  # noqa: E402  (shared server start/stop, percentiles, machine info)

REPO = grpc_bench.REPO
RECEIVED = 13  # EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED
WAIT = 10.0
WARMUP = 20


class Subscriber:
    """One SubscribeEvents stream in a thread; each received message's text and arrival time go on a queue."""

    def __init__(self, grpc_target: str, token: str, conversation_id: str) -> None:
        import grpc

        from convhub.v1 import event_service_pb2, event_service_pb2_grpc

        self.arrivals: queue.Queue[tuple[str, float]] = queue.Queue()
        self._channel = grpc.insecure_channel(grpc_target)
        stub = event_service_pb2_grpc.EventServiceStub(self._channel)
        request = event_service_pb2.SubscribeEventsRequest(conversation_id=conversation_id, event_types=[RECEIVED])
        self._call = stub.SubscribeEvents(request, metadata=(("authorization", f"Bearer {token}"),))
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # cancelled on close
            for response in self._call:
                now = time.perf_counter()
                for event in response.events:
                    self.arrivals.put((event.message.text, now))

    def wait_for(self, text: str) -> float:
        deadline = time.perf_counter() + WAIT
        while True:
            seen, at = self.arrivals.get(timeout=max(0.0, deadline - time.perf_counter()))
            if seen == text:
                return at

    def close(self) -> None:
        self._call.cancel()
        self._thread.join(timeout=5)
        self._channel.close()


def round_trips(send: Callable[[str], None], subscriber: Subscriber, tag: str, count: int) -> tuple[list[float], int]:
    """Sorted round-trip seconds of `count` messages (after a warm-up), and how many failed or timed out."""
    latencies: list[float] = []
    errors = 0
    for i in range(WARMUP + count):
        text = f"{tag} {i}"
        started = time.perf_counter()
        try:
            send(text)
            arrived = subscriber.wait_for(text)
        except Exception:
            errors += 1
            continue
        if i >= WARMUP:
            latencies.append(arrived - started)
    return sorted(latencies), errors


def bench_backend(backend: str, count: int) -> list[str] | None:
    conftest = grpc_bench._conftest()
    import grpc
    import httpx

    from convhub.server.store.customers import create_customer, create_token
    from convhub.server.store.db import create_db_engine
    from convhub.v1 import common_pb2, ingest_service_pb2
    from tests.support import Api
    from tests.webchat_support import create_webchat_account, open_session, post_text

    with tempfile.TemporaryDirectory(prefix=f"convhub-webchat-bench-{backend}-") as tmp:
        db = contextlib.contextmanager(conftest.create_database)(backend, Path(tmp))
        try:
            database_url = db.__enter__()
        except BaseException as exc:  # pytest.skip when PostgreSQL is unreachable
            if isinstance(exc, KeyboardInterrupt):
                raise
            print(f"\n## {backend}: skipped ({exc})")
            return None
        env = {"CONVHUB_WEBCHAT_BURST": "1000", "CONVHUB_WEBCHAT_RATE": "1000"}
        try:
            server = grpc_bench.start(database_url, Path(tmp), env=env)
            try:
                engine = create_db_engine(database_url, pool_size=1)
                try:
                    customer_id = create_customer(engine, "webchat-bench")
                    token = create_token(engine, customer_id, "bench").token
                finally:
                    engine.dispose()
                metadata = (("authorization", f"Bearer {token}"),)
                with (
                    grpc.insecure_channel(server.grpc_target) as channel,
                    httpx.Client(base_url=server.http_base or "", timeout=WAIT) as http,
                ):
                    api = Api.for_tenant(channel, metadata)
                    account = create_webchat_account(api.accounts)
                    session = open_session(http, account.widget_key)
                    subscriber = Subscriber(server.grpc_target, token, session.conversation_id)
                    try:
                        time.sleep(0.5)  # the stream is registered before the first message

                        def ingest(text: str) -> None:
                            api.ingest.IngestMessage(
                                ingest_service_pb2.IngestMessageRequest(
                                    account_id=account.id,
                                    peer=common_pb2.Address(
                                        type=common_pb2.ADDRESS_TYPE_WEBCHAT, target=session.visitor_id
                                    ),
                                    text=text,
                                )
                            )

                        def visitor_post(text: str) -> None:
                            response = post_text(http, session, text)
                            if response.status_code != 201:
                                raise RuntimeError(response.text)

                        ceiling, ceiling_errors = round_trips(ingest, subscriber, "grpc", count)
                        web, web_errors = round_trips(visitor_post, subscriber, "web", count)
                    finally:
                        subscriber.close()
            finally:
                grpc_bench.stop(server)
        finally:
            db.__exit__(None, None, None)
    return _table(backend, ceiling, ceiling_errors, web, web_errors)


def _ms(values: list[float], q: float) -> float:
    return grpc_bench._percentile(values, q) * 1000


def _table(backend: str, ceiling: list[float], ceiling_errors: int, web: list[float], web_errors: int) -> list[str]:
    rows = [
        f"\n## {backend}\n",
        "| scenario | n | errors | p50 ms | p99 ms | p50 ratio to (a0) |",
        "|---|---|---|---|---|---|",
        f"| (a0) gRPC IngestMessage -> subscriber | {len(ceiling)} | {ceiling_errors} "
        f"| {_ms(ceiling, 0.5):.2f} | {_ms(ceiling, 0.99):.2f} | 1.00 |",
        f"| (a) visitor POST -> subscriber | {len(web)} | {web_errors} "
        f"| {_ms(web, 0.5):.2f} | {_ms(web, 0.99):.2f} | {_ms(web, 0.5) / _ms(ceiling, 0.5):.2f} |",
    ]
    for row in rows:
        print(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    grpc_bench.machine_info(backends, "convhub web chat benchmark")
    for backend in backends:
        bench_backend(backend, max(1, min(args.count, 5000)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
