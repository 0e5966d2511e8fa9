"""CPU per inbound message, in-process: the event loop's share and the group-commit writer's, apart.

    python bench/ingest_cpu.py [--backends sqlite,postgresql] [--batch 10] [--rounds 200]

Why beside grpc_bench.py: on a shared 2-core VM that benchmark's ratios move
by ±10 % between runs minutes apart (Health/Check alone ranges 1.5x), so a
change of a few percent to ingest needs many alternating runs to show. This
one runs the real ingest path without the network and counts CPU time per
thread (`CLOCK_THREAD_CPUTIME_ID`), which a busy neighbour barely moves:

- **loop**: what the event loop's thread spends per IngestMessage call, from
  the observed gRPC handler (the same wrapping `convhub serve` registers)
  through the request rules, authentication, the API translation and the
  service's rules to the group commit and back: `--batch` calls at a time,
  as concurrent callers arrive. The writer runs on its own thread and is not
  counted here.
- **writer**: the group-commit writer thread's CPU per message for those
  batches (room match, rows, events, commit), measured on that thread;
- **writer alone**: the same kind of batch handed straight to the writer
  while no call is in flight (alternate rounds), to see whether the loop's
  work beside it makes the writer's dearer (GIL hand-offs).

Ceilings, measured in the same run:
- loop: decoding the request and encoding the response (upb), which any gRPC
  server does per call;
- writer (SQLite): the same batch's statements, captured from the writer and
  replayed through the sqlite3 driver alone, in a transaction rolled back (so
  the database's own work, without the Python around it).

Each ratio is ceiling / measured: the share of the CPU that the unavoidable
part takes (higher is better). Scenarios: messages into existing rooms (d) and
into new rooms (e), as in grpc_bench.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import event

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.grpc_bench import fresh_database, machine_info  # noqa: E402
from convhub.server.api.grpc_transport import generic_handlers  # noqa: E402
from convhub.server.api.services import build_dispatcher  # noqa: E402
from convhub.server.app import freeze_startup_heap  # noqa: E402
from convhub.server.config import Settings  # noqa: E402
from convhub.server.domain.addresses import Address  # noqa: E402
from convhub.server.events.broadcaster import Broadcaster  # noqa: E402
from convhub.server.observability.grpc_calls import GrpcCallObserver  # noqa: E402
from convhub.server.observability.logs import AccessLog  # noqa: E402
from convhub.server.services.ingest import InboundMessage  # noqa: E402
from convhub.server.services.use_cases import UseCases  # noqa: E402
from convhub.server.store.customers import create_customer, create_token  # noqa: E402
from convhub.server.store.db import Database, open_database, upgrade_schema  # noqa: E402
from convhub.server.store.secrets import SecretBox, generate_key  # noqa: E402
from convhub.v1 import common_pb2, ingest_service_pb2  # noqa: E402

METHOD = "/convhub.v1.IngestService/IngestMessage"
SELF_NUMBER = "+15559990000"
ROOMS = 200  # existing rooms, seeded first: batches of 10 mostly meet 10 different rooms


class _Details:
    """grpc.HandlerCallDetails for looking a handler up by method name."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


class _Context:
    """The parts of grpc.aio.ServicerContext a successful unary call touches."""

    def __init__(self, token: str) -> None:
        self._metadata = (("user-agent", "grpc-python/bench"), ("authorization", f"Bearer {token}"))

    def time_remaining(self) -> float:
        return 30.0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50000"


def thread_cpu(thread: threading.Thread) -> float:
    """CPU seconds `thread` has used so far."""
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def request(peer: str, n: int) -> bytes:
    tel = common_pb2.ADDRESS_TYPE_TEL
    return ingest_service_pb2.IngestMessageRequest(
        channel=common_pb2.CONVERSATION_TYPE_MESSAGE,
        self=common_pb2.Address(type=tel, target=SELF_NUMBER),
        peer=common_pb2.Address(type=tel, target=peer),
        text=f"bench ingest_cpu {n}",
    ).SerializeToString()


class Statements:
    """The writer's statements as its DB-API cursor received them, replayed on a snapshot for the ceiling.

    Before a captured batch the database is copied (sqlite3's backup API) to a
    scratch file; the batch's statements then run there through the bare
    driver, on the same rows in the same state, and commit.
    """

    def __init__(self, db: Database, database_url: str, scratch: Path) -> None:
        self.db = db
        self.path = database_url.removeprefix("sqlite:///")
        self.scratch = scratch
        self.recording = False
        self.seen: list[tuple[str, Any, bool]] = []
        self.replica: sqlite3.Connection | None = None
        event.listen(db.writer, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, executemany: bool) -> None:
        if self.recording:
            self.seen.append((statement, parameters, executemany))

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[tuple[str, Any, bool]]]:
        if self.replica is not None:
            self.replica.close()
        self.scratch.unlink(missing_ok=True)
        # Copied through the connection that replays: its page cache is as warm as the writer's.
        self.replica = sqlite3.connect(self.scratch, isolation_level=None)
        with contextlib.closing(sqlite3.connect(self.path)) as source:
            source.backup(self.replica)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            self.replica.execute(f"PRAGMA {pragma}")
        self.seen = []
        self.recording = True
        try:
            yield self.seen
        finally:
            self.recording = False

    def replay_cpu(self, statements: list[tuple[str, Any, bool]]) -> float:
        """CPU seconds for `statements` through the bare sqlite3 driver, BEGIN IMMEDIATE to COMMIT."""
        conn = self.replica
        assert conn is not None
        t0 = time.thread_time()
        conn.execute("BEGIN IMMEDIATE")
        for statement, parameters, many in statements:
            # SQLAlchemy's insertmanyvalues batches report executemany with one flat parameter list.
            if many and parameters and isinstance(parameters[0], (list, tuple, dict)):
                conn.executemany(statement, parameters)
            else:
                conn.execute(statement, parameters).fetchall()
        conn.execute("COMMIT")
        return time.thread_time() - t0


async def run(database_url: str, backend: str, scratch: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    settings = Settings(default_region="US")
    db = open_database(database_url, workers=2, secrets=SecretBox([generate_key()]))
    upgrade_schema(db.writer)
    customer = create_customer(db.writer, "ingest-cpu")
    token = create_token(db.writer, customer).token
    writer = ThreadPoolExecutor(1, thread_name_prefix="convhub-db")
    use_cases = UseCases.build(db, settings, writer)
    broadcaster = Broadcaster(db, poll_interval=1.0, buffer_size=100)
    dispatcher = build_dispatcher(db, settings, writer, broadcaster, use_cases=use_cases)
    discard = open(os.devnull, "w")  # noqa: SIM115 (closed with the database below)
    access_log = AccessLog("text", logging.StreamHandler(discard))  # lines formatted and written, not kept
    observer = GrpcCallObserver(metrics=True, access_log=access_log, spans=None)
    handler = next(h.service(_Details(METHOD)) for h in generic_handlers(dispatcher) if h.service(_Details(METHOD)))
    call = observer.wrapped(METHOD, handler).unary_unary
    serialize = handler.response_serializer
    context = _Context(token)
    statements = Statements(db, database_url, scratch) if backend == "sqlite" else None
    writer_thread = writer.submit(threading.current_thread).result()
    counter = iter(range(10**9))
    loop_thread = threading.current_thread()

    async def write_alone(peers: list[str]) -> float:
        """Writer CPU seconds for `peers`' messages written as one batch with no call in flight."""
        ingest = use_cases.ingest
        items = [
            ingest._prepare(
                InboundMessage(
                    customer_id=customer,
                    channel="message",
                    self_address=Address("tel", SELF_NUMBER),
                    peer=Address("tel", peer),
                    text=f"bench ingest_cpu {next(counter)}",
                )
            )
            for peer in peers
        ]
        w0 = thread_cpu(writer_thread)
        await asyncio.get_running_loop().run_in_executor(writer, ingest._write_batch, items)
        return thread_cpu(writer_thread) - w0

    async def batch(peers: list[str]) -> None:
        await asyncio.gather(*(_one(p) for p in peers))

    async def _one(peer: str) -> None:
        serialize(await call(request(peer, next(counter)), context))

    await batch([f"+1555{1_000_000 + i:07d}" for i in range(ROOMS)])  # the existing rooms
    freeze_startup_heap()  # as `convhub serve` does before serving: collections skip the start-up heap
    results: dict[str, dict[str, float]] = {}
    new_peer = iter(range(2_000_000, 9_999_999))
    for kind, peers_for in (
        (
            "(d) existing rooms",
            lambda r: [f"+1555{1_000_000 + (r * args.batch + i) % ROOMS:07d}" for i in range(args.batch)],
        ),
        ("(e) new rooms", lambda r: [f"+1555{next(new_peer):07d}" for _ in range(args.batch)]),
    ):
        loop_us: list[float] = []
        writer_us: list[float] = []
        alone_us: list[float] = []
        ceiling_writer: list[float] = []
        for r in range(args.rounds * 2):
            peers = peers_for(r)
            if r % 2:  # the same kind of batch handed straight to the writer while the loop waits idle
                alone_us.append(await write_alone(peers) / args.batch * 1e6)
                continue
            capture = statements.capture() if statements is not None and r % 10 == 0 else contextlib.nullcontext([])
            with capture as seen:
                l0, w0 = thread_cpu(loop_thread), thread_cpu(writer_thread)
                await batch(peers)
                l1, w1 = thread_cpu(loop_thread), thread_cpu(writer_thread)
            loop_us.append((l1 - l0) / args.batch * 1e6)
            writer_us.append((w1 - w0) / args.batch * 1e6)
            if seen and statements is not None:
                ceiling_writer.append(statements.replay_cpu(list(seen)) / args.batch * 1e6)
        results[kind] = {
            "loop": statistics.median(loop_us),
            "writer": statistics.median(writer_us),
            "writer_alone": statistics.median(alone_us),
            "writer_ceiling": statistics.median(ceiling_writer) if ceiling_writer else float("nan"),
        }
    wire = request(f"+1555{1_000_000:07d}", 0)
    response = await call(wire, context)
    results["ceiling"] = {
        "loop": _best(lambda: serialize(ingest_service_pb2.IngestMessageRequest.FromString(wire) and response))
    }
    writer.shutdown(wait=True)
    if statements is not None and statements.replica is not None:
        statements.replica.close()
    discard.close()
    db.dispose()
    return results


def _best(fn: Callable[[], object], number: int = 5000, repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.thread_time()
        for _ in range(number):
            fn()
        best = min(best, (time.thread_time() - t0) / number * 1e6)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--batch", type=int, default=10, help="calls in flight together = one group-commit batch")
    parser.add_argument("--rounds", type=int, default=200, help="batches per scenario (the median is reported)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    machine_info(backends, "convhub ingest CPU per message (in-process)")
    print(f"- batches of {args.batch}, {args.rounds} per scenario; medians of per-batch CPU per message\n")
    print(
        "| backend | scenario | loop µs/msg | ratio (decode+encode) | writer µs/msg | ratio (bare driver) "
        "| writer alone µs/msg |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for backend in backends:
        with (
            tempfile.TemporaryDirectory(prefix="convhub-ingest-cpu-") as tmp,
            fresh_database(backend, Path(tmp)) as url,
        ):
            if url is None:
                continue
            results = asyncio.run(run(url, backend, Path(tmp) / "replay.db", args))
        floor = results.pop("ceiling")["loop"]
        for kind, r in results.items():
            writer_ratio = r["writer_ceiling"] / r["writer"] if r["writer_ceiling"] == r["writer_ceiling"] else None
            print(
                f"| {backend} | {kind} | {r['loop']:.1f} | {floor / r['loop']:.2f} | {r['writer']:.1f} | "
                f"{'-' if writer_ratio is None else f'{writer_ratio:.2f}'} | {r['writer_alone']:.1f} |"
            )
    print(f"\nloop ceiling: request decode + response encode = {floor:.1f} µs per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
