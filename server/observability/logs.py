"""Log output (plain text or JSON lines on stderr) and the one access line per call.

Every record goes through the root logger's one handler, so uvicorn's and
gRPC's records get the same format. The access line (`convhub.access`, INFO)
carries only what is safe to keep: method or route, status, duration, customer
id, peer — never a token, a credential or anything from the request body.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

ACCESS_LOGGER = logging.getLogger("convhub.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the call's fields, any exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "call", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: int, log_format: str) -> None:
    """Send every log record to stderr in `log_format` ("text" or "json") from `level` up."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def access_log_enabled() -> bool:
    """Whether access lines would be written (decided once at start, so a call pays nothing when not)."""
    return ACCESS_LOGGER.isEnabledFor(logging.INFO)


def log_grpc_call(method: str, code: str, seconds: float, customer_id: str | None, peer: str) -> None:
    ms = round(seconds * 1000, 3)
    fields = {"transport": "grpc", "method": method, "code": code, "duration_ms": ms}
    fields.update(customer_id=customer_id, peer=peer)
    ACCESS_LOGGER.info(
        "grpc %s %s %.3fms customer=%s peer=%s", method, code, ms, customer_id or "-", peer, extra={"call": fields}
    )


def log_http_call(
    http_method: str, route: str, status: int, seconds: float, customer_id: str | None, peer: str
) -> None:
    ms = round(seconds * 1000, 3)
    fields = {"transport": "http", "method": http_method, "route": route, "status": status, "duration_ms": ms}
    fields.update(customer_id=customer_id, peer=peer)
    ACCESS_LOGGER.info(
        "http %s %s %d %.3fms customer=%s peer=%s",
        http_method,
        route,
        status,
        ms,
        customer_id or "-",
        peer,
        extra={"call": fields},
    )
