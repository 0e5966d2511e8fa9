"""Where webhooks may go (SSRF guard): http(s) URLs whose every address is public, or explicitly allowed.

Checked when an endpoint is created or updated, and again before every
attempt, because DNS can change between the two: the sender connects to the
address this module approved (Host header and TLS name stay the URL's), so a
second lookup by the HTTP client cannot swap in a private address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL = 2048
RESOLVE_TIMEOUT = 5.0


class TargetError(ValueError):
    """A URL or address webhooks must not be sent to; the message says why (for the `url` field)."""


@dataclass(frozen=True)
class WebhookUrl:
    url: str
    scheme: str
    host: str  # without brackets for IPv6 literals
    port: int
    parts: SplitResult

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_url(url: str) -> WebhookUrl:
    """Check the URL's shape: http or https, a host, no credentials, no whitespace or control characters."""
    if not url:
        raise TargetError("is required")
    if len(url) > MAX_URL:
        raise TargetError(f"must be at most {MAX_URL} characters")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise TargetError("must not contain spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise TargetError("must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise TargetError("must not contain credentials")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise TargetError("must name a host")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise TargetError("has an invalid port") from None
    return WebhookUrl(url, scheme, host, port, parts)


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """`CONVHUB_WEBHOOK_ALLOWED_NETWORKS`: comma-separated CIDRs (empty: none)."""
    out = []
    for part in text.split(","):
        if part.strip():
            try:
                out.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"{part.strip()!r} is not a CIDR: {exc}") from None
    return tuple(out)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_public(ip: IPAddress) -> bool:
    """Globally routable unicast: not loopback, private, link-local, multicast, reserved or unspecified."""
    ip = _unmapped(ip)
    return ip.is_global and not (
        ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_private
    )


def address_allowed(ip: IPAddress, allowed: Sequence[IPNetwork]) -> bool:
    ip = _unmapped(ip)
    return is_public(ip) or any(ip.version == net.version and ip in net for net in allowed)


async def resolve(target: WebhookUrl, allowed: Sequence[IPNetwork]) -> list[IPAddress]:
    """The URL's addresses, every one of them allowed; TargetError otherwise.

    All must pass, not just one: a name that also resolves to an internal
    address is refused rather than gambled on.
    """
    addresses = await _addresses(target)
    if not addresses:
        raise TargetError(f"host {target.host!r} cannot be resolved")
    for ip in addresses:
        if not address_allowed(ip, allowed):
            raise TargetError(f"resolves to {ip}, which is not a public address")
    return addresses


async def _addresses(target: WebhookUrl) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(target.host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
        )
    except (OSError, TimeoutError, UnicodeError):
        return []
    # getaddrinfo may append a zone (`fe80::1%eth0`) to link-local IPv6 addresses.
    return list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
