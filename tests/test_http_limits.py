"""REST closes connections that send nothing, send headers too slowly or sit idle, and caps how many are open.

Real `convhub serve` processes with short limits set through their settings,
probed with raw sockets on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import start_server, stop_server

COUNT = 50
# Generous: the limit is 1 s; this only has to be shorter than "never".
CLOSED_WITHIN = 20.0
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def _serve(tmp_path: Path, **settings: str) -> Iterator[tuple[str, int]]:
    env = {f"CONVHUB_{name.upper()}": value for name, value in settings.items()}
    proc, _grpc, http, _lines = start_server(f"sqlite:///{tmp_path / 'limits.db'}", data_dir=tmp_path, env=env)
    assert http is not None
    try:
        parts = urlsplit(http)
        assert parts.hostname is not None and parts.port is not None
        yield parts.hostname, parts.port
    finally:
        assert stop_server(proc) == 0


@pytest.fixture(scope="module")
def short_timeouts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    yield from _serve(
        tmp_path_factory.mktemp("timeouts"),
        http_header_timeout="1",
        http_keepalive_timeout="1",
        http_max_connections="500",
    )


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    yield from _serve(
        tmp_path_factory.mktemp("capped"),
        http_header_timeout="60",
        http_keepalive_timeout="60",
        http_max_connections=str(COUNT),
    )


async def _closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed the connection."""
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    """One keep-alive request on an open connection; the status line."""
    writer.write(REQUEST)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 10)
    headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1]) for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    await asyncio.wait_for(reader.readexactly(length), 10)
    return status


async def _still_serves(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _connections(host: str, port: int, count: int) -> AsyncIterator[list[Connection]]:
    conns = [await asyncio.open_connection(host, port) for _ in range(count)]
    try:
        yield conns
    finally:
        for _, writer in conns:
            writer.close()


async def _all_closed(conns: list[Connection]) -> list[bytes]:
    """What each connection received before the server closed it (fails if one stays open)."""
    return await asyncio.wait_for(asyncio.gather(*(_closed(reader) for reader, _ in conns)), CLOSED_WITHIN)


async def _trickle_header_lines(writer: asyncio.StreamWriter) -> None:
    """Slowloris: one more header line every 0.2 s, never the blank line that ends the headers."""
    with contextlib.suppress(ConnectionError):
        for i in range(int(CLOSED_WITHIN * 5) + 10):
            writer.write(b"X-Slow-%d: yes\r\n" % i)
            await writer.drain()
            await asyncio.sleep(0.2)  # also well inside the 1 s keep-alive timeout


async def test_connections_that_send_nothing_are_closed_after_the_header_timeout(
    short_timeouts: tuple[str, int],
) -> None:
    host, port = short_timeouts
    async with _connections(host, port, COUNT) as conns:
        assert await _all_closed(conns) == [b""] * COUNT  # closed without a response
        await _still_serves(host, port)


async def test_headers_trickling_in_are_cut_off_at_the_header_timeout(short_timeouts: tuple[str, int]) -> None:
    host, port = short_timeouts
    async with _connections(host, port, COUNT) as conns:
        for _, writer in conns:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        senders = [asyncio.create_task(_trickle_header_lines(writer)) for _, writer in conns]
        try:
            await _still_serves(host, port)
            assert await _all_closed(conns) == [b""] * COUNT
        finally:
            for task in senders:
                task.cancel()


async def test_a_later_request_trickling_in_on_a_kept_alive_connection_is_cut_off(
    short_timeouts: tuple[str, int],
) -> None:
    host, port = short_timeouts
    async with _connections(host, port, 1) as conns:
        reader, writer = conns[0]
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        sender = asyncio.create_task(_trickle_header_lines(writer))
        try:
            assert await _all_closed(conns) == [b""]
        finally:
            sender.cancel()


async def test_idle_keep_alive_connections_are_closed(short_timeouts: tuple[str, int]) -> None:
    host, port = short_timeouts
    async with _connections(host, port, COUNT) as conns:
        for reader, writer in conns:
            assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
        assert await _all_closed(conns) == [b""] * COUNT


async def test_a_kept_alive_connection_serves_requests_slower_than_the_header_timeout_apart(
    short_timeouts: tuple[str, int],
) -> None:
    """The header timer runs only while a request's headers are awaited, not while a request is served."""
    host, port = short_timeouts
    async with _connections(host, port, 1) as [(reader, writer)]:
        for _ in range(3):
            assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
            await asyncio.sleep(0.5)  # idle, under the 1 s keep-alive timeout


async def test_connections_past_the_cap_are_refused_while_open_ones_keep_working(capped: tuple[str, int]) -> None:
    host, port = capped
    async with _connections(host, port, COUNT) as conns:
        for reader, writer in conns:  # each answered once: all are accepted and counted
            assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")

        for _ in range(5):
            reader, writer = await asyncio.open_connection(host, port)
            with contextlib.suppress(ConnectionError):
                writer.write(REQUEST)
                await writer.drain()
            answer = await asyncio.wait_for(_closed(reader), CLOSED_WITHIN)
            writer.close()
            assert answer == b"" or answer.startswith(b"HTTP/1.1 503"), answer[:200]

        for reader, writer in conns[:5]:
            assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")

        freed_reader, freed_writer = conns.pop()
        freed_writer.close()
        await _closed(freed_reader)
        for _ in range(100):  # the server notices the close within a loop turn or two
            reader, writer = await asyncio.open_connection(host, port)
            try:
                with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                    if (await _get(reader, writer)).startswith(b"HTTP/1.1 200"):
                        break
            finally:
                writer.close()
            await asyncio.sleep(0.05)
        else:
            pytest.fail("a freed slot was never reused")


async def test_kept_alive_connections_stay_open_for_the_configured_idle_time(capped: tuple[str, int]) -> None:
    """The keep-alive setting is the one in force: 60 s here, longer than uvicorn's own 5 s default."""
    host, port = capped
    async with _connections(host, port, 1) as [(reader, writer)]:
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
        await asyncio.sleep(5.5)
        assert (await _get(reader, writer)).startswith(b"HTTP/1.1 200")
