#!/usr/bin/env python
"""convhub email benchmark: inbound emails/s through the SMTP receiver and through the hook, as ratios to the
signed Twilio hook rate measured in the same run, on SQLite and PostgreSQL.

For each backend: start the real server with CONVHUB_SMTP_ADDRESS on a free loopback port and its
Twilio API pointed at the stand-in, seed a Twilio account with 100 rooms (channels_bench's `seed`) and
an email account whose 100 correspondents already have a room, then from a separate (spawned) process:

  (t)  signed Twilio inbound hooks into existing rooms        the reference rate, 1.00
  (h1) POST /v1.0/hooks/email/{id}, 1 KB text                 ratio to (t)
  (h2) the same with a 200 KB PDF attachment                  ratio to (t)
  (s1) SMTP into the built-in receiver (aiosmtplib, one connection per caller, kept open), 1 KB text
  (s2) the same with a 200 KB attachment

Every message is new (its own Message-ID) and lands in an existing room. Conventions as the other
benches: ratios from the same run, exit 0 unless a server fails to start. Keep it short on the shared
machine:

    python bench/email_bench.py [--seconds 5] [--backends sqlite,postgresql] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import multiprocessing
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import channels_bench  # noqa: E402  (the Twilio hook load and its seed)
import grpc_bench  # noqa: E402  (server start/stop, percentiles, machine info)

REPO = grpc_bench.REPO
OUR_ADDRESS = "support@bench.example"
HOOK_SECRET = "bench-hook-secret"
CORRESPONDENTS = 100
ATTACHMENT_BYTES = 200 * 1024
TEXT_BYTES = 1024
SMTP_LINE = re.compile(r"SMTP on (\S+):(\d+)$")
CALL_TIMEOUT = 20.0


@dataclass(frozen=True)
class EmailLoad:
    kind: str  # hook | smtp
    attachment: bool
    http_base: str
    smtp_port: int
    account_id: str
    seconds: float
    warmup: float
    concurrency: int
    tag: str


def _correspondent(n: int) -> str:
    return f"person{n % CORRESPONDENTS:03d}@mail.bench.example"  # the From of _raw_email(n, ...)


@functools.lru_cache(maxsize=16)
def _template(tag: str, attachment: bool) -> bytes:
    """One message per scenario, built once with the stdlib; each call fills in its number (the load
    process shares the 2 cores with the server, so building a MIME message per call would skew the ratio)."""
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "person@@P@@@mail.bench.example"
    msg["To"] = OUR_ADDRESS
    msg["Subject"] = f"bench {tag} @@N@@"
    msg["Message-ID"] = f"<{tag}.@@N@@.{uuid.uuid4().hex}@mail.bench.example>"
    msg.set_content(("bench text " * 200)[:TEXT_BYTES])
    if attachment:
        pdf = b"%PDF-1.4\n" + b"\x00" * ATTACHMENT_BYTES
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="a.pdf")
    return msg.as_bytes()


def _raw_email(n: int, tag: str, attachment: bool) -> bytes:
    return (
        _template(tag, attachment).replace(b"@@N@@", str(n).encode()).replace(b"@@P@@", b"%03d" % (n % CORRESPONDENTS))
    )


def run_email_load(load: EmailLoad) -> channels_bench.Outcome:
    return asyncio.run(_run_email_load(load))


async def _run_email_load(load: EmailLoad) -> channels_bench.Outcome:
    async with contextlib.AsyncExitStack() as stack:
        call = await (_hook_factory(load, stack) if load.kind == "hook" else _smtp_factory(load, stack))
        latencies: list[float] = []
        errors: list[str] = []
        counter = iter(range(10**9))
        start = time.perf_counter()
        measure_from, deadline = start + load.warmup, start + load.warmup + load.seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                n = next(counter)
                raw = _raw_email(n, load.tag, load.attachment)  # built outside the timed call
                t0 = time.perf_counter()
                try:
                    await asyncio.wait_for(call(n, raw), CALL_TIMEOUT)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                    continue
                t1 = time.perf_counter()
                if measure_from <= t1 <= deadline:
                    latencies.append(t1 - t0)

        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(load.concurrency))),
            timeout=load.warmup + load.seconds + CALL_TIMEOUT + 30,
        )
    latencies.sort()
    return channels_bench.Outcome(
        calls=len(latencies),
        seconds=load.seconds,
        p50_ms=grpc_bench._percentile(latencies, 0.50) * 1000,
        p99_ms=grpc_bench._percentile(latencies, 0.99) * 1000,
        errors=len(errors),
        returned_at={},
        first_error=errors[0] if errors else "",
    )


async def _hook_factory(load: EmailLoad, stack: contextlib.AsyncExitStack) -> Callable[[int, bytes], Awaitable[None]]:
    path = f"/v1.0/hooks/email/{load.account_id}"
    free = asyncio.Queue[channels_bench.RawHttp]()
    for _ in range(load.concurrency):
        connection = await channels_bench.RawHttp.connect(load.http_base)
        stack.push_async_callback(connection.close)
        free.put_nowait(connection)

    async def hook(n: int, raw: bytes) -> None:
        connection = await free.get()
        try:
            status, payload = await connection.post_form(path, raw, {"X-Convhub-Hook-Secret": HOOK_SECRET})
        finally:
            free.put_nowait(connection)
        if status != 200:
            raise RuntimeError(f"HTTP {status}: {payload[:200]!r}")

    return hook


async def _smtp_factory(load: EmailLoad, stack: contextlib.AsyncExitStack) -> Callable[[int, bytes], Awaitable[None]]:
    import aiosmtplib

    free = asyncio.Queue[Any]()
    for _ in range(load.concurrency):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=load.smtp_port, timeout=CALL_TIMEOUT, start_tls=False)
        await client.connect()
        stack.push_async_callback(client.quit)
        free.put_nowait(client)

    async def send(n: int, raw: bytes) -> None:
        client = await free.get()
        try:
            await client.sendmail(_correspondent(n), [OUR_ADDRESS], raw)
        finally:
            free.put_nowait(client)

    return send


# ---------------------------------------------------------------------------
# Server side (main process)
# ---------------------------------------------------------------------------


def seed_email(http_base: str, token: str) -> str:
    """An email account on OUR_ADDRESS and one room per correspondent (a first email each); its id."""
    import httpx

    with httpx.Client(base_url=http_base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as rest:
        created = rest.post(
            "/v1.0/conversation_accounts",
            json={
                "type": "email",
                "address": {"type": "email", "target": OUR_ADDRESS},
                "credentials": {"host": "127.0.0.1", "hook_secret": HOOK_SECRET},
            },
        )
        created.raise_for_status()
        account_id = str(created.json()["id"])
        for n in range(CORRESPONDENTS):
            r = rest.post(
                f"/v1.0/hooks/email/{account_id}",
                content=_raw_email(n, "seed", False),
                headers={"X-Convhub-Hook-Secret": HOOK_SECRET},
            )
            r.raise_for_status()
    return account_id


def bench_backend(backend: str, args: argparse.Namespace, pool: ProcessPoolExecutor) -> list[str] | None:
    conftest = grpc_bench._conftest()
    from tests.channel_rig import provider_env
    from tests.twilio_standin import TwilioStandIn

    standin = TwilioStandIn().start()
    with tempfile.TemporaryDirectory(prefix=f"convhub-email-bench-{backend}-") as tmp:
        db = contextlib.contextmanager(conftest.create_database)(backend, Path(tmp))
        try:
            database_url = db.__enter__()
        except BaseException as exc:  # pytest.skip when PostgreSQL is unreachable
            if isinstance(exc, KeyboardInterrupt):
                raise
            print(f"\n## {backend}: skipped ({exc})")
            return None
        env = {**provider_env(standin, channels_bench.PUBLIC_URL), "CONVHUB_SMTP_ADDRESS": "127.0.0.1:0"}
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
    token, twilio_account, auth_token, rooms = channels_bench.seed(database_url, server.grpc_target, standin)
    email_account = seed_email(server.http_base, token)
    smtp_port = next(int(m.group(2)) for line in server.lines if (m := SMTP_LINE.search(line)))
    print(f"\n## {backend}: server pid {server.proc.pid}, REST {server.http_base}, SMTP port {smtp_port}", flush=True)
    budget = args.seconds + args.warmup + 180

    def report(kind: str, outcome: channels_bench.Outcome) -> channels_bench.Outcome:
        note = f" (first error: {outcome.first_error})" if outcome.errors else ""
        print(
            f"  {kind}: {outcome.rate:,.0f}/s p50 {outcome.p50_ms:.2f} ms p99 {outcome.p99_ms:.2f} ms"
            f" errors {outcome.errors}{note}",
            flush=True,
        )
        return outcome

    twilio = report(
        "twilio hooks",
        pool.submit(
            channels_bench.run_load,
            channels_bench.Load(
                "hooks",
                server.grpc_target,
                server.http_base,
                token,
                twilio_account,
                auth_token,
                rooms,
                args.seconds,
                args.warmup,
                args.concurrency,
                0.0,
                "t",
            ),
        ).result(timeout=budget),
    )

    def email(kind: str, attachment: bool, tag: str) -> channels_bench.Outcome:
        load = EmailLoad(
            kind, attachment, server.http_base, smtp_port, email_account,
            args.seconds, args.warmup, args.concurrency, tag,
        )  # fmt: skip
        label = f"{kind} {'200 KB attachment' if attachment else '1 KB text'}"
        return report(label, pool.submit(run_email_load, load).result(timeout=budget))

    rows = [
        ("(h1) email hook, 1 KB text", email("hook", False, "h1")),
        ("(h2) email hook, 200 KB attachment", email("hook", True, "h2")),
        ("(s1) SMTP receiver, 1 KB text", email("smtp", False, "s1")),
        ("(s2) SMTP receiver, 200 KB attachment", email("smtp", True, "s2")),
    ]
    lines = [
        f"### {backend}",
        "| scenario | rate | p50 | p99 | ratio to (t) |",
        "|---|---|---|---|---|",
        f"| (t) signed Twilio hooks | {twilio.rate:,.0f}/s | {twilio.p50_ms:.1f} ms | {twilio.p99_ms:.1f} ms | 1.00 |",
    ]
    for label, outcome in rows:
        ratio = outcome.rate / twilio.rate if twilio.rate else math.nan
        lines.append(
            f"| {label} | {outcome.rate:,.0f}/s | {outcome.p50_ms:.1f} ms | {outcome.p99_ms:.1f} ms | {ratio:.2f} |"
        )
    lines.append("errors: " + ", ".join(f"{label.split()[0]} {o.errors}" for label, o in [("(t)", twilio), *rows]))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement time per scenario (default 5)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up before each measurement (default 1)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--concurrency", type=int, default=16, help="calls in flight per scenario (default 16)")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    grpc_bench.machine_info(backends, title="convhub email benchmark")
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
