"""Build and run the service: gRPC server (with health and reflection), REST shim, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import uvicorn
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from convhub.server.api.grpc_transport import generic_handlers
from convhub.server.api.services import build_dispatcher
from convhub.server.config import Settings
from convhub.server.observability.logs import configure_logging
from convhub.server.observability.setup import Observability
from convhub.server.store.customers import ensure_default_customer
from convhub.server.store.db import Database, database_backend, open_database, upgrade_schema
from convhub.server.store.sealed_columns import check_secrets_open, seal_plaintext_credentials
from convhub.server.store.secrets import SecretBox, SecretKeyError, SecretUnreadable, load_secret_box

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


def prepare_database(settings: Settings) -> Database:
    """Open the database and upgrade its schema; on an empty one, print the default customer's token once."""
    url = settings.resolved_database_url
    try:
        backend = database_backend(url)
    except ValueError as exc:  # an unsupported or malformed URL
        raise StartupError(f"CONVHUB_DATABASE_URL: {exc}") from None
    db = open_database(url, workers=settings.db_workers, secrets=load_secrets(settings, backend))
    upgrade_schema(db.writer)
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


def _bind(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets it recognises
    # as TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.set_inheritable(True)
    return sock


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT, then drain: health NOT_SERVING, stop accepting, finish in-flight calls."""
    db = prepare_database(settings)
    executor = ThreadPoolExecutor(settings.db_workers, thread_name_prefix="convhub-db")
    dispatcher = build_dispatcher(db, settings, executor)
    life = _Lifecycle()
    observability = Observability(settings, db)

    server = grpc.aio.server(options=GRPC_OPTIONS, interceptors=observability.grpc_interceptors())
    server.add_generic_rpc_handlers(generic_handlers(dispatcher))
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    service_names = [s.full_name for s in dispatcher.services]
    reflection.enable_server_reflection([*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        grpc_port = server.add_insecure_port(settings.grpc_address)
    except RuntimeError:
        grpc_port = 0
    if grpc_port == 0:
        raise StartupError(f"grpc address {settings.grpc_address}: cannot listen there (in use or not local)")
    await server.start()
    for name in ["", *service_names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)

    http_server = None
    http_task = None
    endpoints = [f"gRPC on {settings.grpc_address.rpartition(':')[0]}:{grpc_port}"]
    if settings.http_address:
        from convhub.server.gateway import build_gateway_app

        gateway_app = build_gateway_app(dispatcher, max_body_bytes=settings.max_body_bytes, ready=lambda: life.ready)
        gateway_app.router.routes.extend(observability.http_routes())
        app = observability.wrap_http(gateway_app)
        try:
            sock = _bind(settings.http_address)
        except (OSError, ValueError) as exc:
            await server.stop(0)
            raise StartupError(f"http address {settings.http_address}: {exc}") from None
        http_server = _EmbeddedUvicorn(
            uvicorn.Config(
                app,
                access_log=False,  # ours (observability/http_calls.py) knows route templates and customers
                log_config=None,  # uvicorn's records go through our handler and format
                lifespan="off",
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        http_task = asyncio.create_task(http_server.serve(sockets=[sock]))
        host, port = sock.getsockname()[:2]
        endpoints.append(f"REST on http://{host if ':' not in host else f'[{host}]'}:{port}")

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, life.stop.set)
    life.ready = True
    print(f"convhub: serving {', '.join(endpoints)}", flush=True)

    await life.stop.wait()
    log.info("convhub: shutting down")
    life.ready = False
    await health_servicer.enter_graceful_shutdown()
    if http_server is not None and http_task is not None:
        http_server.should_exit = True
        await http_task
    await server.stop(settings.shutdown_grace)
    executor.shutdown(wait=True)
    observability.close()
    db.dispose()
    print("convhub: stopped", flush=True)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn sharing our loop: signals are ours, so it must not install its own handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def run(settings: Settings) -> None:
    configure_logging(settings.log_level_number, settings.log_format)
    asyncio.run(serve(settings))
