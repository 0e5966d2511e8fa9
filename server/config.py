"""Settings: every knob the service reads, in one typed place, validated at start.

Each field is read from `CONVHUB_<FIELD>` (tracing reads OpenTelemetry's standard
`OTEL_*` names instead). Every value is parsed and checked when `Settings` is built,
so a bad one fails the command at once with `SettingsError` naming the variable —
the CLI prints it and exits 2 — instead of a traceback later or a silently wrong default.

Adding a setting is one annotated line below (a constrained type, or `Annotated[...,
AfterValidator(check)]` with a `check` that raises ValueError) and a row in the README's
configuration table (a test compares the two). Mark values that may hold a credential
`Field(repr=False)`: they are then never echoed in error messages or reprs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CONVHUB_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST = re.compile(r"\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+")


def _listen_address(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not _HOST.fullmatch(host) or not port.isdigit() or int(port) > 65535:
        raise ValueError("expected HOST:PORT (port 0-65535, IPv6 hosts in brackets), e.g. 127.0.0.1:8080")
    return value


def _optional_listen_address(value: str) -> str:
    return value and _listen_address(value)


def _database_url(value: str) -> str:
    if not value:
        return value
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        backend = make_url(value).get_backend_name()
    except ArgumentError:
        raise ValueError("not a SQLAlchemy URL (e.g. postgresql+psycopg://user@host/db)") from None
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql+psycopg://...")
    return value


def _region(value: str) -> str:
    import phonenumbers

    code = value.strip().upper()
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("unknown region: expected a two-letter region code such as US, GB or JP")
    return code


def _log_level(value: str) -> str:
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level: expected one of {', '.join(LOG_LEVELS)}")
    return level


def _otlp_endpoint(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http(s) URL of an OTLP/HTTP receiver, e.g. http://collector:4318")
    return value.rstrip("/")


def _retry_schedule(value: str) -> str:
    from convhub.server.events.webhooks.schedule import RetrySchedule

    RetrySchedule.parse(value)  # ValueError names what is wrong
    return value


def _networks(value: str) -> str:
    from convhub.server.events.webhooks.targets import parse_networks

    parse_networks(value)
    return value


def _base_url(value: str) -> str:
    if not value:
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ValueError("expected an http(s) base URL without query, e.g. https://hub.example.com")
    return value.rstrip("/")


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from `7d`, `12h`, `30m`, `45s` or a plain number of seconds."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 7d, 12h, 30m, 45s or seconds")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else value


ListenAddress = Annotated[str, AfterValidator(_listen_address)]
OptionalListenAddress = Annotated[str, AfterValidator(_optional_listen_address)]


class SettingsError(Exception):
    """One or more settings are unusable; each line names a variable (or CLI flag) and why."""


class Settings(BaseSettings):
    """Service configuration: `CONVHUB_<FIELD>` environment variables, CLI flags on top."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid", validate_default=True)

    data_dir: Path = Path("convhub-data")
    # Empty means the embedded default: SQLite in data_dir. May hold a password: never echoed.
    database_url: Annotated[str, AfterValidator(_database_url), Field(repr=False)] = ""
    grpc_address: ListenAddress = "127.0.0.1:50051"
    # Empty disables the REST shim (and with it /metrics).
    http_address: OptionalListenAddress = "127.0.0.1:8080"
    # Threads running write transactions on PostgreSQL (and the writer pool size).
    db_workers: Annotated[int, Field(ge=1, le=256)] = 8
    # Region for phone numbers given without a leading `+` (a region phonenumbers knows).
    default_region: Annotated[str, AfterValidator(_region)] = "US"
    # Seconds to let in-flight calls finish on SIGTERM.
    shutdown_grace: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0
    # Largest REST request body accepted (bytes); larger answers 413.
    max_body_bytes: Annotated[int, Field(ge=1)] = 1_048_576
    log_level: Annotated[str, AfterValidator(_log_level)] = "INFO"
    # text: one human-readable line per record; json: one JSON object per line.
    log_format: Literal["text", "json"] = "text"
    # One line per gRPC/REST call on the `convhub.access` logger (at INFO).
    access_log: bool = True
    # Prometheus metrics at /metrics on the REST listener.
    metrics: bool = True
    # OpenTelemetry: traces are exported (OTLP/HTTP) only when the endpoint is set.
    otel_exporter_otlp_endpoint: Annotated[str, AfterValidator(_otlp_endpoint)] = Field(
        "", validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    otel_service_name: Annotated[str, Field(min_length=1)] = Field("convhub", validation_alias="OTEL_SERVICE_NAME")
    # Fernet keys sealing stored secrets, comma-separated: the first seals, all open (store/secrets.py).
    # Empty: generated into data_dir on SQLite, refused on PostgreSQL. Never shown in a repr or an error.
    secret_key: Annotated[str, Field(repr=False)] = ""
    # REST connections: seconds a client gets to send a request's headers (from connecting, or from the
    # first byte of a later request on a kept-alive connection); slower or silent ones are closed (slowloris).
    http_header_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0
    # Seconds an idle kept-alive REST connection stays open after its last response.
    http_keepalive_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 5.0
    # Open REST connections at most; one more is answered 503 and closed at once.
    http_max_connections: Annotated[int, Field(ge=1)] = 1000
    # Seconds before each webhook attempt, comma-separated: the first is the delay before the first
    # attempt, the count is the number of attempts (Standard Webhooks: now, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h).
    webhook_retry_schedule: Annotated[str, AfterValidator(_retry_schedule)] = "0,5,300,1800,7200,18000,36000,36000"
    # Seconds a rotated-out webhook secret still signs deliveries (at most 30 days).
    webhook_rotation_grace: Annotated[float, Field(ge=0, le=30 * 86400, allow_inf_nan=False)] = 86400.0
    # Where this replica's webhook emitter runs: `process`, a child process `serve` starts (and restarts),
    # so delivering webhooks takes no CPU from the API's process; `inline`, in the API's process; `off`,
    # nowhere (run `convhub webhook-worker` elsewhere, on the same database).
    webhook_worker: Literal["process", "inline", "off"] = "process"
    # CIDRs webhook URLs may point into although they are not public (e.g. `10.0.0.0/8`), comma-separated.
    webhook_allowed_networks: Annotated[str, AfterValidator(_networks)] = ""
    # Where media bytes (provider content, email attachments) are kept (store/media_files.py); empty:
    # data_dir/media. Replicas must share it (a volume every replica mounts) to serve each other's media.
    media_dir: Path | None = None
    # At most this many bytes in all, and per item. Past either bound the message keeps the item without bytes.
    media_max_bytes: Annotated[int, Field(ge=0)] = 1 << 30
    media_max_item_bytes: Annotated[int, Field(ge=0)] = 25 << 20
    # Database timeouts, seconds (README: "When the database is slow, locked or down").
    # Opening a PostgreSQL connection (libpq counts whole seconds, at least 2).
    db_connect_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 5.0
    # One read. Reads run on the event loop: also the longest it stalls, once, when PostgreSQL stops answering.
    db_read_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 2.0
    # One write statement (PostgreSQL statement_timeout).
    db_statement_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 15.0
    # A write waiting for a lock held elsewhere (SQLite BEGIN IMMEDIATE, PostgreSQL lock_timeout).
    db_lock_timeout: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 10.0
    # How long events are kept (7d, 12h, 30m, 45s or seconds); older ones are pruned in small batches.
    event_retention: Annotated[float, BeforeValidator(_duration), Field(gt=0, allow_inf_nan=False)] = 7 * 86400.0
    # Seconds between the event broadcaster's re-reads when no doorbell rang (a lost ring costs at most this).
    event_poll_interval: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 1.0
    # Events a subscriber may have waiting; one that falls further behind is ended with RESOURCE_EXHAUSTED.
    event_subscriber_buffer: Annotated[int, Field(ge=1)] = 1000
    # Seconds of silence after which an SSE stream gets a comment frame, so proxies keep it open (0: never).
    sse_keepalive: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 15.0

    # --- channels (providers, delivery, lifecycle) ---
    # The REST listener's externally visible base URL: Twilio signs hooks over it, and the
    # status-callback URLs handed to providers start with it. Empty: http://<http_address>.
    public_url: Annotated[str, AfterValidator(_base_url)] = ""
    # Provider API base URLs (tests point them at loopback stand-ins).
    twilio_api_url: Annotated[str, AfterValidator(_base_url)] = "https://api.twilio.com"
    telnyx_api_url: Annotated[str, AfterValidator(_base_url)] = "https://api.telnyx.com"
    line_api_url: Annotated[str, AfterValidator(_base_url)] = "https://api.line.me"
    line_data_api_url: Annotated[str, AfterValidator(_base_url)] = "https://api-data.line.me"
    # Deliveries in flight at once per process.
    delivery_concurrency: Annotated[int, Field(ge=1, le=1024)] = 64
    # Attempts per channel before a retryable failure (5xx, 429, timeout) becomes final.
    delivery_max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    # Backoff between attempts, seconds: exponential from min, capped at max, with jitter.
    delivery_backoff_min: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    delivery_backoff_max: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 300.0
    # Seconds one provider call may take before it counts as a (retryable) timeout.
    provider_timeout: Annotated[float, Field(gt=0, le=300, allow_inf_nan=False)] = 10.0
    # Seconds a claimed delivery job stays leased to its worker; after a crash it is taken
    # over this late. At least 2 x provider_timeout + 5 (checked at start).
    delivery_lease: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    # Seconds between re-polls of the job table when no doorbell rings (retries coming due,
    # other replicas' sends, expired leases).
    delivery_poll_interval: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] = 1.0
    # Seconds between inactivity sweeps (accounts with an inactivity timeout).
    sweep_interval: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 60.0
    # The built-in SMTP receiver's listen address (host:port); empty: no receiver (mail arrives by the hook).
    smtp_address: OptionalListenAddress = ""

    # --- web chat (visitor sessions) ---
    # Seconds a visitor token is valid; the page opens a new session with it before then.
    webchat_token_ttl: Annotated[int, Field(ge=5, le=86_400)] = 3600
    # Seconds after expiry an old visitor token still brings the visitor back to their conversation.
    webchat_return_window: Annotated[int, Field(ge=0)] = 30 * 86_400
    # Messages a visitor may post in a burst, and per second after that (a token bucket per visitor).
    webchat_burst: Annotated[int, Field(ge=1, le=1000)] = 10
    webchat_rate: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 1.0

    @property
    def resolved_public_url(self) -> str:
        """The base URL providers see: CONVHUB_PUBLIC_URL, else the REST listen address (no trailing slash)."""
        return (self.public_url or f"http://{self.http_address}").rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL in force: the configured one, or a SQLite file in data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'convhub.db').resolve()}"

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level]


def env_name(field: str) -> str:
    """The environment variable a field is read from."""
    info = Settings.model_fields[field]
    alias = info.validation_alias
    return alias if isinstance(alias, str) else ENV_PREFIX + field.upper()


def load_settings(overrides: Mapping[str, Any] | None = None, *, flags: Mapping[str, str] | None = None) -> Settings:
    """Settings from the environment with `overrides` (e.g. CLI flags) on top, all validated.

    `flags` maps an override's field to the flag it came from, so an error names what the user typed.
    """
    overrides = dict(overrides or {})
    flags = flags or {}
    # Aliased fields (OTEL_*) are passed by their alias, as pydantic expects.
    kwargs = {env_name(k) if Settings.model_fields[k].validation_alias else k: v for k, v in overrides.items()}
    try:
        return Settings(**kwargs)
    except ValidationError as exc:
        raise SettingsError("\n".join(_describe(error, overrides, flags) for error in exc.errors())) from None


def _describe(error: Any, overrides: Mapping[str, Any], flags: Mapping[str, str]) -> str:
    loc = str(error["loc"][0]) if error["loc"] else ""
    field = next((name for name in Settings.model_fields if loc in (name, env_name(name))), None)
    if field is None:
        return f"{loc}: {error['msg']}"
    source = env_name(field)
    if field in overrides:
        source = f"{flags.get(field, '--' + field.replace('_', '-'))} ({source})"
    message = str(error["msg"]).removeprefix("Value error, ")
    if Settings.model_fields[field].repr:
        message = f"{message} (got {error['input']!r})"
    return f"{source}: {message}"
