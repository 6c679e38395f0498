"""Which addresses the server may connect to when a caller names the URL.

Callers name URLs that the server then reaches: @context documents (a Link header, a body's
@context, ``/jsonldContexts``, a subscription's ``jsonldContext``) and notification endpoints
(HTTP and MQTT). Unchecked, that makes the server a proxy into its own network (server-side
request forgery): services on loopback, a cloud's metadata address, the database. Every such
connection goes through an :class:`EgressPolicy`: globally reachable unicast addresses only,
plus the networks the deployment lists in ``CIDADE_PRIVATE_NETWORKS``.

The check is made on the address a socket is about to connect to, after name resolution,
never on the name: a name that resolves to a public address when it is looked at and to a
private one when it is connected to (DNS rebinding), and a redirect to a private address, are
refused the same way as a private address written in the URL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# NAT64's well-known prefix (RFC 6052): its addresses stand for the IPv4 address in their last
# 32 bits, which is what a connection to them reaches.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class TargetRefused(OSError):
    """A connection to an address that callers may not make the server reach."""


def refused_by_policy(exc: BaseException) -> bool:
    """Whether an error, or the error behind it, is the egress policy's refusal (aiohttp
    wraps the socket's error in its own)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TargetRefused):
            return True
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return False


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDR networks (``10.0.0.0/8, fd00::/8``; an address alone is a network
    of one); "" is none. ValueError naming the entry that is not one."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not a network in CIDR form (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _address(value: str | Address) -> Address:
    if isinstance(value, str):
        value = ipaddress.ip_address(value.split("%", 1)[0])  # an IPv6 zone is not the address
    if isinstance(value, ipaddress.IPv6Address) and value.ipv4_mapped is not None:
        return value.ipv4_mapped  # a socket connected to ::ffff:a.b.c.d reaches a.b.c.d
    return value


def is_public(address: Address) -> bool:
    """Whether ``address`` is a globally reachable unicast address: not loopback, private,
    link-local, shared (CGNAT), multicast, reserved, unspecified or documentation, and, for the
    IPv6 forms that carry an IPv4 address (mapped, 6to4, Teredo, NAT64), neither is the
    address they carry."""
    address = _address(address)
    if isinstance(address, ipaddress.IPv6Address):
        carried: list[ipaddress.IPv4Address] = []
        if address.sixtofour is not None:
            carried.append(address.sixtofour)
        if address.teredo is not None:
            carried.extend(address.teredo)
        if address in _NAT64:
            carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if not all(is_public(inner) for inner in carried) or address.is_site_local:
            return False
    return address.is_global and not address.is_multicast


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """What caller-given URLs may reach: public addresses, and the ``allowed`` networks."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def from_text(cls, networks: str) -> EgressPolicy:
        """From ``CIDADE_PRIVATE_NETWORKS``' form (comma-separated CIDR networks)."""
        return cls(parse_networks(networks))

    def permits(self, address: str | Address) -> bool:
        """Whether a connection to ``address`` (an IP address, not a name) may be made."""
        try:
            ip = _address(address)
        except ValueError:
            return False
        if any(ip.version == net.version and ip in net for net in self.allowed):
            return True
        return is_public(ip)

    def socket_factory(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The socket for one resolved address (aiohttp's ``socket_factory``): every connection
        attempt, to any address of a name, after any redirect, passes here first."""
        family, kind, proto, _, sockaddr = addr_info
        if not self.permits(sockaddr[0]):
            raise TargetRefused(f"connections to {sockaddr[0]} are not allowed")
        return socket.socket(family=family, type=kind, proto=proto)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of ``host`` that may be reached, in resolution order. TargetRefused
        when it has addresses and none may be; OSError when it cannot be resolved."""
        try:
            return [self._checked(host)]
        except ValueError:
            pass  # a name, not an address
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = [address for address in found if self.permits(address)]
        if found and not allowed:
            raise TargetRefused(f"{host} resolves to addresses that may not be reached")
        return allowed

    def _checked(self, literal: str) -> str:
        ip = ipaddress.ip_address(literal.strip("[]").split("%", 1)[0])
        if not self.permits(ip):
            raise TargetRefused(f"connections to {ip} are not allowed")
        return str(ip)

    async def check_host(self, host: str, timeout: float = 2.0) -> None:
        """Refuse (TargetRefused) a host that is, or resolves only to, addresses that may not
        be reached; a name that does not resolve now, or not within ``timeout`` seconds,
        passes (it is checked again, always, when it is connected to)."""
        try:
            async with asyncio.timeout(timeout):
                await self.resolve(host, 0)
        except TargetRefused:
            raise
        except (OSError, TimeoutError):
            pass


def loggable_url(url: str) -> str:
    """A URL fit for logs: no credentials, no query (it may carry tokens)."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(not a URL)"
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


class NamedTlsContext(ssl.SSLContext):
    """A TLS client context that checks the server's certificate against ``server_name``
    whatever address the socket was connected to, for clients (paho-mqtt) that take the name
    to verify from the host they connect to: they are given the checked address instead."""

    server_name: str = ""

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


def named_tls_context(server_name: str, cafile: str | None = None) -> NamedTlsContext:
    """A verifying TLS client context (the system's CAs, or ``cafile``) for ``server_name``."""
    context = NamedTlsContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies certificate and host name
    if cafile:
        context.load_verify_locations(cafile)
    else:
        context.load_default_certs()
    context.server_name = server_name
    return context


__all__ = [
    "EgressPolicy",
    "NamedTlsContext",
    "TargetRefused",
    "is_public",
    "loggable_url",
    "named_tls_context",
    "parse_networks",
]
