"""Listening sockets the service binds itself (the REST listener, the SMTP receiver)."""

from __future__ import annotations

import socket


def bind_tcp(address: str) -> socket.socket:
    """A bound TCP socket for `host:port` (`[v6]:port`; an empty host is every IPv4 address), not yet listening."""
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
