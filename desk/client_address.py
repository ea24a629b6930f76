"""Who is on the other end of a desk request, for the login throttle.

The TCP peer, unless the peer is one of the proxies the operator named
(`CARELOOP_DESK_TRUSTED_PROXIES`): then X-Forwarded-For is read from the right, skipping the
trusted hops, and the first address no trusted proxy vouches for is the client. Anything left
of it was written by the client and is ignored, so a forged header cannot pick the address a
failed login is counted against.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """`10.0.0.5, 10.1.0.0/16, ::1` → networks; ValueError names the entry that is not one."""
    networks: list[Network] = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network") from None
    return tuple(networks)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(request: web.Request, trusted: Sequence[Network]) -> str:
    peer = request.remote or "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer[:64]
    hops = [
        hop.strip()
        for header in request.headers.getall("X-Forwarded-For", [])
        for hop in header.split(",")
    ]
    client = peer
    for hop in reversed(hops):
        if not hop:
            continue
        client = hop
        if not _trusted(hop, trusted):
            break
    return client[:64]
