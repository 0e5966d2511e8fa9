"""The `convhub` command: serve, migrate, and manage customers and tokens."""

from __future__ import annotations

import argparse
import sys

from convhub.server.config import Settings, SettingsError, load_settings

# Settings a command-line flag can override, and the flag's spelling (named in errors).
FLAG_SETTINGS = {"database_url": "--database-url", "grpc_address": "--grpc-address", "http_address": "--http-address"}


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings with the given flags on top, validated alike (SettingsError names the culprit)."""
    overrides = {name: value for name in FLAG_SETTINGS if (value := getattr(args, name, None)) is not None}
    return load_settings(overrides, flags=FLAG_SETTINGS)


def _engine(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from convhub.server.app import database_timeouts
    from convhub.server.store.db import create_db_engine, migrate

    settings = args.settings
    migrate(settings.resolved_database_url, database_timeouts(settings))
    return create_db_engine(settings.resolved_database_url, pool_size=1, timeouts=database_timeouts(settings))


def without_httpx_cli() -> None:
    """Keep httpx from importing its command-line client, which the server never runs.

    httpx's `__init__` imports `httpx._main` whenever click, rich and pygments
    are installed (other tools' dependencies pull them in), ~7 MB resident for
    nothing; a None entry in sys.modules makes that import fail, and httpx
    falls back to its stub `main`, as in an install without them.
    """
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def cmd_serve(args: argparse.Namespace) -> int:
    without_httpx_cli()
    from convhub.server.app import StartupError, run

    try:
        run(args.settings)
    except StartupError as exc:
        print(f"convhub: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_webhook_worker(args: argparse.Namespace) -> int:
    without_httpx_cli()
    from convhub.server.app import StartupError, run_webhook_worker

    try:
        run_webhook_worker(args.settings, args.parent_pid, args.doorbell_fd)
    except StartupError as exc:
        print(f"convhub: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _engine(args).dispose()
    print("convhub: schema is up to date")
    return 0


def cmd_customer_create(args: argparse.Namespace) -> int:
    from convhub.server.store.customers import create_customer, create_token

    engine = _engine(args)
    new = create_token(engine, create_customer(engine, args.name), "default")
    print(f"customer_id: {new.customer_id}\ntoken: {new.token}\n(the token is shown only now; store it)")
    return 0


def cmd_customer_list(args: argparse.Namespace) -> int:
    from convhub.server.store.customers import list_customers

    for customer_id, name in list_customers(_engine(args)):
        print(f"{customer_id}  {name}")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from convhub.server.store.customers import create_token

    try:
        new = create_token(_engine(args), args.customer, args.name)
    except LookupError as exc:
        print(f"convhub: {exc.args[0]}", file=sys.stderr)
        return 1
    print(f"token: {new.token}\n(the token is shown only now; store it)")
    return 0


def cmd_health(args: argparse.Namespace) -> int:
    """Exit 0 when the server answers SERVING (for container health checks and probes)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = args.address or args.settings.grpc_address
    address = address.replace("0.0.0.0:", "127.0.0.1:").replace("[::]:", "[::1]:")
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
    except grpc.RpcError as exc:
        print(f"convhub: {address}: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(status)
    return 0 if response.status == health_pb2.HealthCheckResponse.SERVING else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convhub", description="Self-hosted conversation hub.")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in $CONVHUB_DATA_DIR)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC server and REST shim")
    serve.add_argument("--grpc-address", help="host:port for gRPC (default 127.0.0.1:50051; port 0 picks one)")
    serve.add_argument("--http-address", help="host:port for REST (default 127.0.0.1:8080; empty disables)")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser(
        "webhook-worker",
        help="deliver webhooks only (serve starts one as its child; run it yourself beside CONVHUB_WEBHOOK_WORKER=off)",
    )
    # Set by `serve` for its child (server/worker_process.py), not meant to be typed.
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    worker.add_argument("--doorbell-fd", type=int, help=argparse.SUPPRESS)
    worker.set_defaults(func=cmd_webhook_worker)
    sub.add_parser("migrate", help="upgrade the database schema and exit").set_defaults(func=cmd_migrate)

    customer = sub.add_parser("customer", help="manage customers").add_subparsers(dest="action", required=True)
    create = customer.add_parser("create", help="create a customer and print its first API token")
    create.add_argument("name")
    create.set_defaults(func=cmd_customer_create)
    customer.add_parser("list", help="list customers").set_defaults(func=cmd_customer_list)

    token = sub.add_parser("token", help="manage API tokens").add_subparsers(dest="action", required=True)
    tcreate = token.add_parser("create", help="issue a new API token for a customer")
    tcreate.add_argument("--customer", required=True, help="customer id")
    tcreate.add_argument("--name", default="default", help="a label for the token")
    tcreate.set_defaults(func=cmd_token_create)
    health = sub.add_parser("health", help="check a running server's gRPC health; exit 0 when SERVING")
    health.add_argument("--address", help="host:port (default: $CONVHUB_GRPC_ADDRESS)")
    health.add_argument("--service", default="", help="service name (default: overall)")
    health.add_argument("--timeout", type=float, default=3.0)
    health.set_defaults(func=cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.settings = _settings(args)
    except SettingsError as exc:  # a bad value exits 2 naming it, for every command
        for line in str(exc).splitlines():
            print(f"convhub: {line}", file=sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
