"""Log output (plain text or JSON lines on stderr) and the one access line per call.

Every record goes through the root logger's one handler, so uvicorn's and
gRPC's records get the same format. The access line (`convhub.access`, INFO;
written by `AccessLog` on that handler's stream) carries only what is safe to
keep: method or route, status, duration, customer id, peer — never a token, a
credential, a query string or anything from the request body.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from datetime import UTC, datetime
from json.encoder import encode_basestring as _q  # a JSON string literal, quotes included (C speed)
from typing import Any

ACCESS_LOGGER = logging.getLogger("convhub.access")
FLUSH_INTERVAL = 0.02  # seconds: access lines written on the event loop are written together this often
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_HANDLER: logging.StreamHandler[Any] | None = None


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the call's fields, any exception."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._process:
            entry["process"] = self._process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: int, log_format: str, process: str = "") -> None:
    """Send every log record to stderr in `log_format` ("text" or "json") from `level` up.

    `process` labels the records of a process other than `serve` sharing its
    stderr (the webhook worker): `[webhook-worker]` in text, `"process"` in JSON.
    """
    global _HANDLER
    handler = _HANDLER = logging.StreamHandler(sys.stderr)
    text_format = TEXT_FORMAT.replace("%(name)s", f"[{process}] %(name)s") if process else TEXT_FORMAT
    handler.setFormatter(JsonLineFormatter(process) if log_format == "json" else logging.Formatter(text_format))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def access_log_enabled() -> bool:
    """Whether access lines would be written (decided once at start, so a call pays nothing when not)."""
    return ACCESS_LOGGER.isEnabledFor(logging.INFO)


class AccessLog:
    """Writes the one line per call to the log handler's stream, as a `convhub.access` INFO record would look.

    It skips the LogRecord and the handler chain: those cost ~9 µs a line here,
    most of the budget for logging every call (under 5 % of GetConversation's
    rate with metrics). Same stream, same lock, same format as every other
    record; built only when that logger is enabled for INFO.

    Lines written on the event loop are gathered and written together every
    FLUSH_INTERVAL (one write, one wake-up of whatever reads the pipe, for
    all the calls of that time; a write per loop turn cost ~2 % of
    GetConversation's CPU, a turn serving only one to three calls under load);
    `flush` writes what is pending (on stop). A line may thus follow another
    record written in the same interval; a kill -9 loses at most that
    interval's lines. Off the loop, a line is written at once.
    """

    def __init__(self, log_format: str, handler: logging.StreamHandler[Any] | None = None) -> None:
        handler = handler or _HANDLER
        self._stream: Any = handler.stream if handler is not None else sys.stderr
        self._lock = handler.lock if handler is not None and handler.lock is not None else threading.RLock()
        self._json = log_format == "json"
        self._second = -1
        self._stamp = ""
        self._pending: list[str] = []
        self._flush_scheduled = False

    def grpc(self, method: str, code: str, seconds: float, customer_id: str | None, peer: str) -> None:
        ms = round(seconds * 1000, 3)
        message = f"grpc {method} {code} {ms:.3f}ms customer={customer_id or '-'} peer={peer}"
        if self._json:
            fields = f'"transport": "grpc", "method": {_q(method)}, "code": {_q(code)}, "duration_ms": {ms!r}, '
            self._write_json(message, fields + f'"customer_id": {_q_or_null(customer_id)}, "peer": {_q(peer)}')
        else:
            self._write_text(message)

    def http(
        self,
        http_method: str,
        route: str,
        status: int,
        seconds: float,
        customer_id: str | None,
        peer: str,
        request_id: str | None = None,
    ) -> None:
        ms = round(seconds * 1000, 3)
        message = f"http {http_method} {route} {status} {ms:.3f}ms customer={customer_id or '-'} peer={peer}"
        message += f" request_id={request_id or '-'}"
        if self._json:
            fields = f'"transport": "http", "method": {_q(http_method)}, "route": {_q(route)}, "status": {status:d}, '
            fields += f'"duration_ms": {ms!r}, "customer_id": {_q_or_null(customer_id)}, "peer": {_q(peer)}, '
            fields += f'"request_id": {_q_or_null(request_id)}'
            self._write_json(message, fields)
        else:
            self._write_text(message)

    def _write_text(self, message: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # logging.Formatter's asctime, computed once a second
            self._second, self._stamp = second, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        self._emit(f"{self._stamp},{int((now - second) * 1000):03d} INFO convhub.access: {message}\n")

    def _write_json(self, message: str, fields: str) -> None:
        now = time.time()
        second = int(now)
        if second != self._second:  # JsonLineFormatter's time, computed once a second
            self._second, self._stamp = second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        stamp = f"{self._stamp}.{int((now - second) * 1000):03d}+00:00"
        line = f'{{"time": "{stamp}", "level": "INFO", "logger": "convhub.access", "message": {_q(message)}, {fields}}}'
        self._emit(line + "\n")

    def _emit(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        try:
            asyncio.get_running_loop().call_later(FLUSH_INTERVAL, self.flush)
        except RuntimeError:  # no loop in this thread: write now
            self.flush()

    def flush(self) -> None:
        """Write the lines gathered so far, in one write."""
        with self._lock:
            self._flush_scheduled = False
            if not self._pending:
                return
            text = "".join(self._pending)
            self._pending.clear()
            self._stream.write(text)
            self._stream.flush()


def _q_or_null(value: str | None) -> str:
    return "null" if value is None else _q(value)
