"""Build and run the service: gRPC server (health, reflection), the HTTP app, background workers, ordered stop.

Shutdown (SIGTERM/SIGINT) drains in this order, each step logged at INFO:
  1. health NOT_SERVING (gRPC Watch and /readyz), so balancers move away;
     event subscriptions end (UNAVAILABLE with the sequence to resume after:
     a stream never finishes on its own, and would hold the drain to the grace);
  2. REST stops accepting connections and finishes in-flight requests;
  3. workers finish their current item and release their claims (reverse start order);
  4. gRPC stops accepting calls and finishes in-flight ones;
  5. the database closes.
One grace (`CONVHUB_SHUTDOWN_GRACE`) bounds steps 2-4 together, counted from
the signal. At its end the database's commits are closed *before* anything
still running is cancelled: a call either answers with its result or does
not commit (a cancelled REST call answers 503, safe to retry).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from convhub.server.api.grpc_transport import generic_handlers
from convhub.server.api.health import HealthServicer
from convhub.server.api.reflection import enable_reflection
from convhub.server.api.services import build_dispatcher
from convhub.server.channels.delivery import DeliveryWorker
from convhub.server.channels.email import EmailAdapter, OptOut
from convhub.server.channels.hooks import HookHttp, build_hook_context, hook_routes
from convhub.server.channels.media_links import MediaLinks
from convhub.server.channels.registry import build_adapters
from convhub.server.channels.smtp_receiver import SmtpReceiver
from convhub.server.config import Settings
from convhub.server.events.broadcaster import Broadcaster
from convhub.server.events.retention import EventPruner
from convhub.server.events.stream import EventReader
from convhub.server.events.webhooks.emitter import WebhookEmitter
from convhub.server.events.webhooks.policy import WebhookPolicy
from convhub.server.events.webhooks.sender import ATTEMPT_TIMEOUT
from convhub.server.gateway import Gateway
from convhub.server.gateway.media import media_mount
from convhub.server.http_app import build_http_app
from convhub.server.http_server import SETTLE_SECONDS, ConnectionLimits, HttpServer
from convhub.server.observability.logs import configure_logging
from convhub.server.observability.setup import Observability
from convhub.server.services.email_threads import EmailThreads
from convhub.server.services.inactivity_sweep import InactivitySweep
from convhub.server.services.use_cases import UseCases
from convhub.server.services.webchat import WebchatService
from convhub.server.sockets import bind_tcp
from convhub.server.store.customers import ensure_default_customer
from convhub.server.store.db import Database, DatabaseTimeouts, database_backend, migrate, open_database
from convhub.server.store.doorbell import PipeDoorbell
from convhub.server.store.media_files import MediaFiles
from convhub.server.store.pg_doorbell import NotifyListener
from convhub.server.store.sealed_columns import check_secrets_open, seal_plaintext_credentials
from convhub.server.store.secrets import SecretBox, SecretKeyError, SecretUnreadable, load_secret_box
from convhub.server.webchat.routes import WebchatRoutes
from convhub.server.worker_process import WorkerProcess, die_with_parent
from convhub.server.workers import Supervisor, Worker

log = logging.getLogger("convhub")

GRPC_OPTIONS = [
    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    # let clients keep idle connections alive with pings every >= 10 s
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
]


class StartupError(Exception):
    """A setting the service cannot start with; the message says which and why."""


def load_secrets(settings: Settings, backend: str) -> SecretBox:
    """The key that seals stored secrets (a missing or malformed one stops the start, naming the setting)."""
    try:
        return load_secret_box(settings.secret_key, backend=backend, data_dir=settings.data_dir)
    except SecretKeyError as exc:
        raise StartupError(str(exc)) from None


def check_stored_secrets(db: Database) -> None:
    """Seal credentials stored before sealing existed, then prove the key opens every stored secret."""
    sealed = seal_plaintext_credentials(db.writer, db.secrets)
    if sealed:
        log.info("convhub: sealed the plaintext credentials of %d account(s)", sealed)
    try:
        check_secrets_open(db.writer, db.secrets)
    except SecretUnreadable as exc:
        raise StartupError(str(exc)) from None


def email_opt_out(db: Database) -> OptOut | None:
    """The email unsubscribe link's effect: the person holding the address is opted out of email
    (services/opt_outs.py, issue 9)."""
    from convhub.server.services import opt_outs

    async def opt_out(customer_id: str, address: str) -> None:
        await asyncio.to_thread(
            opt_outs.set_opt_out, db, customer_id=customer_id, address=address, channel="email", opted_out=True
        )

    return opt_out


def database_timeouts(settings: Settings) -> DatabaseTimeouts:
    return DatabaseTimeouts(
        connect=settings.db_connect_timeout,
        read=settings.db_read_timeout,
        statement=settings.db_statement_timeout,
        lock=settings.db_lock_timeout,
    )


def backend_of(url: str) -> str:
    """`sqlite` or `postgresql`; an unsupported or malformed URL stops the start, naming the setting."""
    try:
        return database_backend(url)
    except ValueError as exc:
        raise StartupError(f"CONVHUB_DATABASE_URL: {exc}") from None


def prepare_database(settings: Settings) -> Database:
    """Open the database and upgrade its schema; on an empty one, print the default customer's token once."""
    url = settings.resolved_database_url
    backend = backend_of(url)
    db = open_database(
        url,
        workers=settings.db_workers,
        secrets=load_secrets(settings, backend),
        timeouts=database_timeouts(settings),
    )
    migrate(url, database_timeouts(settings), forked=True)  # alembic stays out of the serving process
    check_stored_secrets(db)
    first = ensure_default_customer(db.writer)
    if first is not None:
        print(
            "convhub: created customer 'default' "
            f"({first.customer_id}). Its API token, shown only now:\n  {first.token}",
            flush=True,
        )
    return db


@dataclass
class _Lifecycle:
    ready: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)


def build_supervisor(db: Database, settings: Settings, *workers: Worker) -> Supervisor:
    """Every background worker of the process, in start order (they stop in reverse)."""
    supervisor = Supervisor()
    if db.backend == "postgresql":
        # First: consumers added after it are woken by what other replicas commit.
        supervisor.add(NotifyListener(db.writer.url, db.doorbell))
    if settings.webhook_worker == "inline":
        supervisor.add(WebhookEmitter(db, WebhookPolicy.from_settings(settings)))
    elif settings.webhook_worker == "process":
        supervisor.add(
            WorkerProcess(
                "webhook-process",
                ["webhook-worker"],
                settings.resolved_database_url,
                db.doorbell if db.backend == "sqlite" else None,  # PostgreSQL: the child LISTENs
                stop_timeout=ATTEMPT_TIMEOUT + 10,
            )
        )
    for worker in workers:
        supervisor.add(worker)
    return supervisor


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    done = False

    def call() -> None:
        nonlocal done
        if not done:
            done = True
            fn()

    return call


@dataclass
class _Running:
    """Everything `serve` started, and the order it stops in (see the module docstring)."""

    db: Database
    executor: ThreadPoolExecutor
    supervisor: Supervisor
    event_streams: Broadcaster
    grpc_server: grpc.aio.Server
    health: HealthServicer
    http_server: HttpServer | None
    life: _Lifecycle
    observability: Observability

    async def drain(self, grace: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        close_commits = _once(self.db.close_commits)
        log.info("shutdown: health NOT_SERVING")
        self.life.ready = False
        await self.health.enter_graceful_shutdown()
        log.info("shutdown: ending event subscriptions (%d)", self.event_streams.subscriber_count)
        await self.event_streams.stop()
        if self.http_server is not None:
            await self.http_server.drain(deadline, close_commits)
        log.info("shutdown: stopping workers: %s", ", ".join(w.name for w in self.supervisor.workers) or "none")
        await self.supervisor.stop()
        log.info("shutdown: gRPC stops accepting calls and finishes in-flight ones")
        # Calls still running at the deadline are aborted SETTLE_SECONDS after the commits closed.
        timer = loop.call_at(deadline, close_commits)
        try:
            await self.grpc_server.stop(max(0.0, deadline - loop.time()) + SETTLE_SECONDS)
        finally:
            timer.cancel()
        log.info("shutdown: closing the database")
        await asyncio.to_thread(self.executor.shutdown, wait=True)
        self.observability.close()
        self.db.dispose()


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain in the order the module docstring gives."""
    db = prepare_database(settings)
    executor = ThreadPoolExecutor(settings.db_workers, thread_name_prefix="convhub-db")
    use_cases = UseCases.build(db, settings, executor)
    broadcaster = Broadcaster(
        db, poll_interval=settings.event_poll_interval, buffer_size=settings.event_subscriber_buffer
    )
    dispatcher = build_dispatcher(db, settings, executor, broadcaster, use_cases=use_cases)
    life = _Lifecycle()
    observability = Observability(settings, db)
    supervisor = build_supervisor(
        db, settings, broadcaster, EventPruner(db, executor, retention=settings.event_retention)
    )
    media = MediaFiles(
        settings.media_dir or settings.data_dir / "media",
        max_total_bytes=settings.media_max_bytes,
        max_item_bytes=settings.media_max_item_bytes,
    )
    if settings.delivery_lease < settings.provider_timeout * 2 + 5:
        raise StartupError(
            f"CONVHUB_DELIVERY_LEASE ({settings.delivery_lease}s) must be at least twice "
            f"CONVHUB_PROVIDER_TIMEOUT plus 5s, so a live worker finishes an attempt within its lease"
        )
    email_threads = EmailThreads(db)
    adapters = build_adapters(settings, media, email_threads, email_opt_out(db))
    hook_http = HookHttp(settings.provider_timeout)
    hooks = build_hook_context(use_cases, settings, hook_http.client, executor)
    supervisor.add(hook_http)  # closed after REST drained (workers stop after it)
    smtp_receiver = None
    if settings.smtp_address:  # stopped with the workers (reverse order), before gRPC and the database close
        email_adapter = adapters["smtp"]
        assert isinstance(email_adapter, EmailAdapter)
        smtp_receiver = SmtpReceiver(
            settings.smtp_address,
            email_adapter,
            hooks,
            email_threads,
            data_size_limit=settings.media_max_item_bytes * 2 + (1 << 20),
        )
        supervisor.add(smtp_receiver)
    webchat = WebchatRoutes(
        WebchatService(db, settings), use_cases.ingest, EventReader(db, broadcaster), db, settings, executor
    )
    media_links = MediaLinks(db.secrets.derived_key("media-links"), settings.resolved_public_url)
    supervisor.add(
        DeliveryWorker(use_cases.delivery, adapters, use_cases.delivery_bell, settings, executor, media_links)
    )
    supervisor.add(InactivitySweep(use_cases.lifecycle, settings.sweep_interval, executor))

    server = grpc.aio.server(options=GRPC_OPTIONS)
    services = observability.observe_grpc(server)  # every handler registered through it is observed
    services.add_generic_rpc_handlers(generic_handlers(dispatcher))
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, services)
    service_names = [s.full_name for s in dispatcher.services]
    enable_reflection([*service_names, health.SERVICE_NAME], services)
    try:
        grpc_port = server.add_insecure_port(settings.grpc_address)
    except RuntimeError:
        grpc_port = 0
    if grpc_port == 0:
        raise StartupError(f"grpc address {settings.grpc_address}: cannot listen there (in use or not local)")
    http_sock = None
    if settings.http_address:
        try:
            http_sock = bind_tcp(settings.http_address)
        except (OSError, ValueError) as exc:
            raise StartupError(f"http address {settings.http_address}: {exc}") from None

    try:
        await supervisor.start()
    except OSError as exc:  # the SMTP listen address (the others were bound above)
        raise StartupError(f"smtp address {settings.smtp_address}: {exc}") from None
    if smtp_receiver is not None and smtp_receiver.bound is not None:
        print(f"convhub: SMTP on {smtp_receiver.bound[0]}:{smtp_receiver.bound[1]}", flush=True)
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    endpoints = [f"gRPC on {settings.grpc_address.rpartition(':')[0]}:{grpc_port}"]
    http_server = None
    if http_sock is not None:
        app = observability.wrap_http(
            build_http_app(
                Gateway(dispatcher, settings.max_body_bytes, sse_keepalive=settings.sse_keepalive),
                ready=lambda: life.ready,
                hook_routes=hook_routes(adapters, hooks),
                extra_routes=observability.http_routes(),
                mounts=[media_mount(dispatcher.authenticate, media, media_links), *webchat.mounts()],
            )
        )
        limits = ConnectionLimits(
            header_timeout=settings.http_header_timeout,
            keepalive_timeout=settings.http_keepalive_timeout,
            max_connections=settings.http_max_connections,
        )
        http_server = HttpServer(app, limits)
        host, port = http_sock.getsockname()[:2]
        await http_server.start(http_sock)
        endpoints.append(f"REST on http://{host if ':' not in host else f'[{host}]'}:{port}")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.stop.set)
    freeze_startup_heap()
    life.ready = True
    print(f"convhub: serving {', '.join(endpoints)}", flush=True)

    await life.stop.wait()
    running = _Running(db, executor, supervisor, broadcaster, server, health_servicer, http_server, life, observability)
    await running.drain(settings.shutdown_grace)
    print("convhub: stopped", flush=True)


def freeze_startup_heap() -> None:
    """Move everything built at start-up (modules, SQLAlchemy, protobuf, handlers) out of the collector's sight.

    It lives as long as the process, yet every full collection walked it
    again, pausing the event loop: with 1,000 open streams (events_bench (a),
    PostgreSQL, shared 2-core machine) they walked 145-216k objects and took
    170-700 ms, the size of the p99. Frozen, the one full collection left in
    that run walked 55k.
    """
    gc.collect()  # garbage made while starting is freed, not frozen
    gc.freeze()


def run(settings: Settings) -> None:
    configure_logging(settings.log_level_number, settings.log_format)
    asyncio.run(serve(settings))


async def webhook_worker(settings: Settings, parent_pid: int | None, doorbell_fd: int | None) -> None:
    """`convhub webhook-worker`: the webhook emitter alone, until SIGTERM (or SIGINT when run on its own).

    See server/worker_process.py.

    As `serve`'s child (`parent_pid`), the schema is already up to date; run on
    its own, beside replicas with CONVHUB_WEBHOOK_WORKER=off, it upgrades it first.
    """
    if parent_pid is not None:
        die_with_parent(parent_pid)
    url = settings.resolved_database_url
    backend = backend_of(url)
    if parent_pid is None:
        migrate(url, database_timeouts(settings), forked=True)
    db = open_database(url, workers=2, secrets=load_secrets(settings, backend), timeouts=database_timeouts(settings))
    supervisor = Supervisor()
    if backend == "postgresql":
        supervisor.add(NotifyListener(db.writer.url, db.doorbell))
    elif doorbell_fd is not None:
        supervisor.add(PipeDoorbell(doorbell_fd, db.doorbell))
    supervisor.add(WebhookEmitter(db, WebhookPolicy.from_settings(settings)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if parent_pid is not None:  # Ctrl-C reaches the whole process group: serve stops its child, in its turn
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM,) if parent_pid is not None else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await supervisor.start()
    freeze_startup_heap()
    log.info("webhook worker: running (pid %d)", os.getpid())
    await stop.wait()
    log.info("webhook worker: stopping")
    await supervisor.stop()
    db.dispose()


def run_webhook_worker(settings: Settings, parent_pid: int | None, doorbell_fd: int | None) -> None:
    configure_logging(settings.log_level_number, settings.log_format, process="webhook-worker")
    asyncio.run(webhook_worker(settings, parent_pid, doorbell_fd))
