#!/usr/bin/env python
"""TypeScript client load run: GetConversation from Node vs the Python load generator, same server, same run.

Starts `convhub serve` on SQLite (as bench/grpc_bench.py does, with its seed
data), then measures GetConversation with `--concurrency` calls in flight over
one connection: first from the Python load generator (grpc.aio, in a spawned
process: bench/grpc_bench.py's `run_scenario`), then from
client/typescript/bench/get-conversation.ts (this repository's TypeScript
client: Connect-ES v2 over connect-node's gRPC transport), alternating
`--rounds` times. Reports each rate and the ratio TypeScript / Python; absolute
numbers drift between runs on a shared machine, the ratio less so.
Never fails CI: exit 0 unless the server or a load generator fails to start.

    python bench/ts_client_bench.py [--seconds 4] [--rounds 1] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import grpc_bench  # the sibling benchmark: its server, seed data and Python load generator

TS_PACKAGE = grpc_bench.REPO / "client" / "typescript"


def build_ts_bench() -> Path:
    """Compile the TypeScript client and its load generator (npm ci first if needed)."""
    if not (TS_PACKAGE / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=TS_PACKAGE, check=True)
    subprocess.run(["npx", "tsc", "-p", "."], cwd=TS_PACKAGE, check=True)
    return TS_PACKAGE / "dist" / "bench" / "get-conversation.js"


def run_ts(script: Path, target: str, seeded: grpc_bench.Seeded, args: argparse.Namespace) -> grpc_bench.Result:
    env = {
        **os.environ,
        "CONVHUB_GRPC_ADDRESS": target,
        "CONVHUB_TOKEN": seeded.token,
        "BENCH_CONVERSATION_ID": seeded.conversation_id,
        "BENCH_SECONDS": str(args.seconds),
        "BENCH_WARMUP": str(args.warmup),
        "BENCH_CONCURRENCY": str(args.concurrency),
    }
    out = subprocess.run(
        ["node", str(script)], env=env, capture_output=True, text=True, check=True, timeout=args.seconds + 120
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return grpc_bench.Result(
        "TypeScript GetConversation",
        "ts_get",
        data["calls"],
        data["seconds"],
        data["p50_ms"],
        data["p99_ms"],
        data["errors"],
        data["error_samples"],
    )


def line(label: str, result: grpc_bench.Result) -> str:
    return (
        f"  {label:<28} {result.rate:>9,.0f}/s  p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
        f"  errors {result.errors}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per run (default 4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before each run (default 1)")
    parser.add_argument("--rounds", type=int, default=1, help="Python/TypeScript pairs, alternating (default 1)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight (default 32)")
    args = parser.parse_args(argv)
    args.channels = 1  # one connection each: the TypeScript client shares one HTTP/2 session too

    script = build_ts_bench()
    grpc_bench.machine_info(["sqlite"], title="convhub TypeScript client benchmark")
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory(prefix="convhub-ts-bench-") as tmp,
        ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool,
    ):
        server = grpc_bench.start(f"sqlite:///{Path(tmp) / 'convhub.db'}", Path(tmp))
        try:
            seeded = grpc_bench.seed(f"sqlite:///{Path(tmp) / 'convhub.db'}", server.grpc_target)
            print(f"\nGetConversation, {args.concurrency} in flight, {args.seconds:g} s per run, SQLite", flush=True)
            py_calls = ts_calls = 0
            py_seconds = ts_seconds = 0.0
            for _ in range(args.rounds):
                sc = grpc_bench.scenario("(b) GetConversation", "get", server.grpc_target, seeded, args)
                py = grpc_bench.run_in(pool, sc, args)
                print(line("Python (grpc.aio)", py), flush=True)
                ts = run_ts(script, server.grpc_target, seeded, args)
                print(line("TypeScript (connect-node)", ts), flush=True)
                for sample in [*py.error_samples, *ts.error_samples]:
                    print(f"    ERROR {sample}")
                py_calls, py_seconds = py_calls + py.calls, py_seconds + py.seconds
                ts_calls, ts_seconds = ts_calls + ts.calls, ts_seconds + ts.seconds
            py_rate, ts_rate = py_calls / py_seconds, ts_calls / ts_seconds
            print(f"\n  TypeScript / Python rate: {ts_rate / py_rate:.2f}  ({ts_rate:,.0f}/s vs {py_rate:,.0f}/s)")
        finally:
            grpc_bench.stop(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
