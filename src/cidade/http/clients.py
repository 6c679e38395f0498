"""Who is at the other end: the client's address, through the proxies the deployment trusts.

Behind a reverse proxy every request comes from the proxy's address, so a limit per address
(the public's rate, failed log-ins) would be one limit for the whole city. The proxy says whom
it forwards for in ``X-Forwarded-For`` (or RFC 7239 ``Forwarded``), but so can anyone: those
headers are believed only when the peer is a proxy the deployment lists
(``CIDADE_TRUSTED_PROXIES``), and then only as far as they were written by trusted proxies:
the client is the rightmost hop that is not a trusted proxy. Hops further left were written by
the client itself and could say anything.

``X-Forwarded-For`` is read when present (nginx, HAProxy, Traefik and the cloud load balancers
write it), else ``Forwarded``; a trusted proxy that writes only ``Forwarded`` must drop an
``X-Forwarded-For`` that clients send (docs/security.md).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from cidade.http.egress import Network


def _hop(text: str) -> str:
    """One hop as a comparable address: quotes, brackets and a port taken off (``1.2.3.4:80``,
    ``"[2001:db8::1]:4711"``); anything else (``unknown``, ``_hidden``) as it is."""
    hop = text.strip().strip('"').strip()
    if hop.startswith("["):
        end = hop.find("]")
        if end > 0:
            hop = hop[1:end]
    elif hop.count(":") == 1:  # IPv4 with a port (an IPv6 address has several colons)
        hop = hop.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(hop.split("%", 1)[0]))
    except ValueError:
        return hop


def forwarded_for(values: Iterable[str]) -> list[str]:
    """The ``for`` hops of RFC 7239 ``Forwarded`` header values, in order."""
    hops = []
    for value in values:
        for element in value.split(","):
            for pair in element.split(";"):
                name, eq, hop = pair.partition("=")
                if eq and name.strip().lower() == "for":
                    hops.append(_hop(hop))
    return hops


class ClientAddresses:
    """The client address of a request, believing forwarding headers from ``trusted`` peers."""

    def __init__(self, trusted: tuple[Network, ...]) -> None:
        self.trusted = trusted

    def _is_trusted(self, hop: str) -> bool:
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address.version == n.version and address in n for n in self.trusted)

    def of(self, scope: dict[str, Any]) -> str:
        """The address to count a request against (an IP address as text, or "unknown")."""
        client = scope.get("client")
        if not client:
            return "unknown"
        if not self.trusted:
            return client[0]
        peer = _hop(client[0])
        if not self._is_trusted(peer):
            return peer
        xff: list[str] = []
        forwarded: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                xff.append(value.decode("latin-1"))
            elif name == b"forwarded":
                forwarded.append(value.decode("latin-1"))
        if xff:
            hops = [_hop(h) for value in xff for h in value.split(",") if h.strip()]
        else:
            hops = forwarded_for(forwarded)
        # The nearest hop first: the first one no trusted proxy could have written is the client.
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer


__all__ = ["ClientAddresses", "forwarded_for"]
