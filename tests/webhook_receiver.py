"""A real HTTP server on loopback standing in for a customer's webhook endpoint.

It records every request (headers, body, arrival time) and answers what the
test's `respond` function says. Signatures are checked by the tests with the
`standardwebhooks` reference library, never with the emitter's own code.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int = 0

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verify(self, secret: str) -> Any:
        """The parsed body if `secret` verifies it (the reference implementation raises otherwise)."""
        return Webhook(secret).verify(self.body, self.headers)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll `predicate` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# (request) -> (status, extra headers); may block to simulate a slow endpoint.
Responder = Callable[[Received], tuple[int, dict[str, str]]]


@dataclass
class Receiver:
    base_url: str
    requests: list[Received] = field(default_factory=list)
    respond: Responder = lambda r: (200, {})
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self, path: str | None = None) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if path is None or r.path == path]

    def delivered(self, path: str | None = None) -> list[Received]:
        """Requests answered 2xx, in arrival order."""
        return [r for r in self.received(path) if 200 <= r.status < 300]

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str = "condition") -> None:
        wait_until(predicate, timeout, f"{what} (got {len(self.requests)} requests so far)")


@contextmanager
def run_receiver(host: str = "127.0.0.1") -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            item = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
            with receiver.lock:
                receiver.requests.append(item)
            status, extra = receiver.respond(item)
            item.status = status
            try:
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the emitter gave up waiting (timeout)

    server = ThreadingHTTPServer((host, 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    receiver = Receiver(f"http://{host}:{port}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def drain_output(proc: Any, lines: list[str]) -> None:
    """Keep reading a server's output into `lines`: a full pipe would stall the server."""

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
