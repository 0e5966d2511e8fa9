"""Settings: every knob the service reads, from environment variables or CLI flags, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


@dataclass(frozen=True)
class Settings:
    """Service configuration. Environment variables are `CONVHUB_<FIELD>` in upper case."""

    data_dir: Path = field(default_factory=lambda: Path(_env("CONVHUB_DATA_DIR", "convhub-data")))
    # Empty means the embedded default: SQLite in data_dir.
    database_url: str = field(default_factory=lambda: _env("CONVHUB_DATABASE_URL", ""))
    grpc_address: str = field(default_factory=lambda: _env("CONVHUB_GRPC_ADDRESS", "127.0.0.1:50051"))
    # Empty disables the REST shim.
    http_address: str = field(default_factory=lambda: _env("CONVHUB_HTTP_ADDRESS", "127.0.0.1:8080"))
    # Threads running write transactions on PostgreSQL (and the writer pool size).
    db_workers: int = field(default_factory=lambda: int(_env("CONVHUB_DB_WORKERS", "8")))
    # Region for phone numbers given without a leading `+` (ISO 3166 code).
    default_region: str = field(default_factory=lambda: _env("CONVHUB_DEFAULT_REGION", "US"))
    # Seconds to let in-flight calls finish on SIGTERM.
    shutdown_grace: float = field(default_factory=lambda: float(_env("CONVHUB_SHUTDOWN_GRACE", "10")))
    # Largest REST request body accepted (bytes); larger answers 413.
    max_body_bytes: int = field(default_factory=lambda: int(_env("CONVHUB_MAX_BODY_BYTES", "1048576")))
    log_level: str = field(default_factory=lambda: _env("CONVHUB_LOG_LEVEL", "INFO"))
    # Fernet keys sealing stored secrets, comma-separated: the first seals, all open (store/secrets.py).
    # Empty: generated into data_dir on SQLite, refused on PostgreSQL. Never shown in a repr.
    secret_key: str = field(default_factory=lambda: _env("CONVHUB_SECRET_KEY", ""), repr=False)

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL in force: the configured one, or a SQLite file in data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'convhub.db').resolve()}"
