"""The emitter's HTTP client: one POST per attempt over kept-alive HTTP/1.1 connections (asyncio + httptools).

Why not httpx: with deliveries running beside ingest, profiles of the server
showed httpx's per-request machinery (request and cookie models, the pool's
locks and events, anyio streams) as the largest share of the API process's
CPU per webhook; an attempt needs far less. It POSTs a body to an address the
SSRF check approved (Host header and TLS name stay the URL's), reads the
status, `Retry-After` and at most `MAX_RESPONSE_BYTES` of the answer, and
never follows redirects or consults proxy settings. The answer is parsed by
httptools (llhttp, as the REST listener's). A connection is reused only after
a complete answer that allows keep-alive; a reused one that fails before any
answer byte is retried once on a fresh connection (the peer may have closed
it while idle), which at-least-once delivery allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

import httptools
import httpx

from convhub.server.events.webhooks.targets import IPAddress, WebhookUrl

MAX_RESPONSE_BYTES = 4096
IDLE_PER_TARGET = 32  # kept-alive connections per (scheme, address, port, TLS name)


class ConnectionClosed(ConnectionError):
    """The peer closed the connection before a complete answer."""


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._answer: asyncio.Future[tuple[Answer, bool]] | None = None
        self._status = 0
        self._retry_after: str | None = None
        self._headers_done = False
        self._read = 0
        self.started = False  # any answer byte for the current request

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._answer is None or self._answer.done():
            self.close()  # an answer nobody asked for: the connection is unusable
            return
        self.started = True
        self._read += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            return
        if self._headers_done and self._read >= MAX_RESPONSE_BYTES:
            self._finish(reusable=False)  # enough read: the status is what counts

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._headers_done:  # an answer delimited by the connection's end
            self._finish(reusable=False)
        else:
            self._fail(ConnectionClosed("the endpoint closed the connection without an answer"))

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self._retry_after = value.decode("latin-1").strip()

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_message_complete(self) -> None:
        self._finish(reusable=self._parser.should_keep_alive())

    # -- requests

    def _finish(self, reusable: bool) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result((Answer(self._status, self._retry_after), reusable and not self.closed))

    def _fail(self, exc: Exception) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(exc)
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def request(self, data: bytes) -> tuple[Answer, bool]:
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self._status, self._retry_after, self._headers_done, self._read, self.started = 0, None, False, 0, False
        self.transport.write(data)
        return await self._answer


Key = tuple[str, str, int, str]


@lru_cache(maxsize=1024)
def request_target(path: str, query: str) -> str:
    """The request line's target: the URL's path (and query), non-ASCII percent-encoded."""
    safe = "/%:@!$&'()*+,;=-._~?"
    target = quote(path or "/", safe=safe)
    return target + ("?" + quote(query, safe=safe) if query else "")


def _ascii_host(host_header: str) -> str:
    try:
        return host_header.encode("ascii").decode()
    except UnicodeEncodeError:
        return host_header.encode("idna").decode()


class WebhookHttp:
    """Kept-alive connections per target; `post` is cancel-safe (a cancelled request's connection is closed)."""

    def __init__(self) -> None:
        self._idle: dict[Key, list[_Connection]] = {}
        self._tls: ssl.SSLContext | None = None

    def _ssl(self) -> ssl.SSLContext:
        if self._tls is None:
            # The trust store httpx uses (certifi), ignoring SSL_* variables as the sender always did.
            self._tls = httpx.create_ssl_context(trust_env=False)
        return self._tls

    async def _connect(self, key: Key) -> _Connection:
        scheme, address, port, tls_name = key
        loop = asyncio.get_running_loop()
        if scheme == "https":
            _, conn = await loop.create_connection(
                _Connection, address, port, ssl=self._ssl(), server_hostname=tls_name
            )
        else:
            _, conn = await loop.create_connection(_Connection, address, port)
        return conn

    async def post(self, url: WebhookUrl, address: IPAddress, headers: Mapping[str, str], body: bytes) -> Answer:
        """POST `body` to `address` (approved for `url`) with `url`'s Host, path and TLS name."""
        key: Key = (url.scheme, str(address), url.port, url.host if url.scheme == "https" else "")
        lines = [
            f"POST {request_target(url.parts.path, url.parts.query)} HTTP/1.1",
            f"host: {_ascii_host(url.host_header)}",
            f"content-length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                try:
                    return await self._send(key, conn, data)
                except ConnectionClosed:
                    if conn.started:
                        raise
                break  # closed while idle (the peer's keep-alive ran out): once more on a fresh connection
        return await self._send(key, await self._connect(key), data)

    async def _send(self, key: Key, conn: _Connection, data: bytes) -> Answer:
        done = False
        try:
            answer, reusable = await conn.request(data)
            done = True
        finally:
            if not done:
                conn.close()  # failed or cancelled mid-request: the connection's state is unknown
        idle = self._idle.setdefault(key, [])
        idle[:] = [c for c in idle if not c.closed]  # those the peer closed while idle
        if reusable and len(idle) < IDLE_PER_TARGET:
            idle.append(conn)
        else:
            conn.close()
            if not idle:
                del self._idle[key]
        return answer

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                with contextlib.suppress(Exception):
                    conn.close()
        self._idle.clear()
