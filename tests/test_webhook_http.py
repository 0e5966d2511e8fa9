"""The emitter's HTTP client (server/events/webhooks/http.py) against raw loopback servers.

Each server here is a plain socket loop that answers the way a real endpoint
(or a misbehaving one) does, so connection reuse, a keep-alive the peer let
run out, oversized and unusual answers, and cancellation are all exercised on
real sockets. The full emitter path is covered by tests/test_webhooks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from convhub.server.events.webhooks.http import Answer, ConnectionClosed, WebhookHttp, request_target
from convhub.server.events.webhooks.targets import parse_url

T = TypeVar("T")
LOOPBACK = ipaddress.ip_address("127.0.0.1")
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


@dataclass
class Peer:
    """What the server saw: one list of raw requests per connection."""

    port: int
    connections: list[list[bytes]] = field(default_factory=list)


def _read_request(conn: socket.socket, buffered: bytes) -> tuple[bytes, bytes] | None:
    """One request (head + content-length body) and what follows it; None at EOF."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")),
        0,
    )
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length], rest[length:]


# (peer, connection's requests so far) -> the answer's bytes, or None to close without answering
Answerer = Callable[[Peer, list[bytes]], bytes | None]


@contextmanager
def raw_server(answer: Answerer) -> Iterator[Peer]:
    listener = socket.create_server(("127.0.0.1", 0))
    peer = Peer(listener.getsockname()[1])

    def serve(conn: socket.socket) -> None:
        requests: list[bytes] = []
        peer.connections.append(requests)
        buffered = b""
        with conn, contextlib.suppress(OSError):  # the client may abort the connection
            while True:
                got = _read_request(conn, buffered)
                if got is None:
                    return
                request, buffered = got
                requests.append(request)
                reply = answer(peer, requests)
                if reply is None:
                    return
                conn.sendall(reply)
                if reply.startswith(b"HTTP/1.0"):
                    return  # an HTTP/1.0 answer without a length ends with the connection

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield peer
    finally:
        listener.close()


def run(fn: Callable[[WebhookHttp], Awaitable[T]]) -> T:
    """`fn(client)` on a fresh event loop and client, closed after."""

    async def main() -> T:
        http = WebhookHttp()
        try:
            return await fn(http)
        finally:
            await http.aclose()

    return asyncio.run(main())


def posts(peer: Peer, count: int, path: str = "/hook") -> list[Answer]:
    url = parse_url(f"http://127.0.0.1:{peer.port}{path}")

    async def send(http: WebhookHttp) -> list[Answer]:
        return [await http.post(url, LOOPBACK, {}, b"x") for _ in range(count)]

    return run(send)


def test_connections_are_kept_alive_and_requests_are_well_formed() -> None:
    with raw_server(lambda _p, _r: OK) as peer:
        url = parse_url(f"http://hooks.example:{peer.port}/in/ü?x=1 2".replace(" ", "%20"))

        async def three(http: WebhookHttp) -> list[int]:
            return [(await http.post(url, LOOPBACK, {"webhook-id": "msg_1"}, b"body")).status for _ in range(3)]

        assert run(three) == [200, 200, 200]
    assert len(peer.connections) == 1 and len(peer.connections[0]) == 3
    head, _, body = peer.connections[0][0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /in/%C3%BC?x=1%202 HTTP/1.1"
    assert f"host: hooks.example:{peer.port}".encode() in lines
    assert b"webhook-id: msg_1" in lines and b"content-length: 4" in lines and body == b"body"


def test_a_keep_alive_the_peer_let_run_out_is_retried_on_a_fresh_connection() -> None:
    # The peer answers the first request, then closes the connection when the second arrives,
    # unanswered: what a server whose idle timeout ran out just as the request was written does.
    def answer(_peer: Peer, requests: list[bytes]) -> bytes | None:
        return OK if len(requests) == 1 else None

    with raw_server(answer) as peer:
        assert [a.status for a in posts(peer, 2)] == [200, 200]
    assert [len(c) for c in peer.connections] == [2, 1]


def test_a_fresh_connection_closed_without_an_answer_is_an_error() -> None:
    with raw_server(lambda _p, _r: None) as peer, pytest.raises(ConnectionClosed):
        posts(peer, 1)
    assert len(peer.connections) == 1  # not retried: nothing was reused


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100000, id="oversized"),
        pytest.param(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", id="chunked"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\nuntil the end", id="until-eof"),
    ],
)
def test_unusual_answers_give_their_status_and_leave_no_broken_connection(reply: bytes) -> None:
    with raw_server(lambda _p, _r: reply) as peer:
        assert [a.status for a in posts(peer, 3)] == [200, 200, 200]
    # A connection is reused only after a complete answer: never for one that ends with the
    # connection; an oversized one is cut short (closed) unless it all arrived in one read.
    if b"chunked" in reply:
        assert len(peer.connections) == 1
    elif reply.startswith(b"HTTP/1.0"):
        assert len(peer.connections) == 3


def test_status_and_retry_after_are_read() -> None:
    reply = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\ncontent-length: 0\r\n\r\n"
    with raw_server(lambda _p, _r: reply) as peer:
        assert posts(peer, 1) == [Answer(429, "7")]


def test_a_cancelled_request_closes_its_connection() -> None:
    release = threading.Event()

    def answer(_peer: Peer, requests: list[bytes]) -> bytes | None:
        if len(requests) == 1 and not release.is_set():
            release.wait(10)
            return None
        return OK

    with raw_server(answer) as peer:
        url = parse_url(f"http://127.0.0.1:{peer.port}/hook")

        async def timed_out_then_ok(http: WebhookHttp) -> int:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await http.post(url, LOOPBACK, {}, b"x")
            release.set()
            return (await http.post(url, LOOPBACK, {}, b"x")).status

        assert run(timed_out_then_ok) == 200
    assert len(peer.connections) == 2  # the cancelled one was not reused


def test_request_target_encodes_only_what_must_be() -> None:
    assert request_target("", "") == "/"
    assert request_target("/a/b%2F", "q=1&r=%20") == "/a/b%2F?q=1&r=%20"
    assert request_target("/é", "") == "/%C3%A9"
