"""Header rules every proxy mode applies: who may claim an identity, and who is asking.

The proxy is the trust boundary: the instance proves nothing, the namespace it reached does.
So anything the caller sent that names a network, router, instance or project is dropped, and
``X-Forwarded-For`` is replaced by the connection's real peer. Pure functions over header
pairs, shared by the inline mode, the ``ns-metadata-proxy`` process and the haproxy config.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from multidict import CIMultiDict

from cloudmeta.http.relay import HOP_BY_HOP, is_forbidden_token_put

__all__ = [
    "FORWARDED_FOR",
    "HOP_BY_HOP",
    "NETWORK_ID_HEADER",
    "ROUTER_ID_HEADER",
    "SOURCE_MAC_HEADER",
    "SPOOFABLE_PREFIXES",
    "Peer",
    "ProxyTarget",
    "clean_headers",
    "is_forbidden_token_put",
    "peer_host",
]

NETWORK_ID_HEADER = "X-Neutron-Network-ID"
ROUTER_ID_HEADER = "X-Neutron-Router-ID"
FORWARDED_FOR = "X-Forwarded-For"
# The source MAC of the connection's SYN, where the proxy could read it (inline, process).
SOURCE_MAC_HEADER = "X-Neutron-Source-MAC"
# Lower-case prefixes of headers only the proxy and the agent may set.
SPOOFABLE_PREFIXES = ("x-neutron-", "x-instance-id", "x-tenant-id", "x-forwarded-for")


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """What a listener serves: one network or one router (never both)."""

    network_id: str | None = None
    router_id: str | None = None

    def __post_init__(self) -> None:
        if (self.network_id is None) == (self.router_id is None):
            raise ValueError("a metadata proxy serves exactly one of network_id or router_id")

    @property
    def header(self) -> tuple[str, str]:
        if self.network_id is not None:
            return NETWORK_ID_HEADER, self.network_id
        assert self.router_id is not None
        return ROUTER_ID_HEADER, self.router_id

    @property
    def uuid(self) -> str:
        return self.network_id if self.network_id is not None else str(self.router_id)


@dataclass(frozen=True, slots=True)
class Peer:
    """Who a connection came from, as a listener saw it: ``ip`` (``fe80::x%<ifindex>`` for a
    link-local peer), the source MAC of its SYN when it was saved, and the namespace."""

    ip: str
    mac: str | None = None
    namespace: str | None = None


def peer_host(peername: object) -> str:
    """The IP of a socket peer (``getpeername()`` tuple); a link-local IPv6 peer keeps its
    interface as ``%<ifindex>`` (the same address may live on two router interfaces)."""
    if isinstance(peername, tuple) and peername:
        host = str(peername[0]).split("%", 1)[0]
        if len(peername) == 4 and peername[3] and host.lower().startswith("fe80:"):
            return f"{host}%{peername[3]}"
        return host
    raise ValueError(f"not an IP peer: {peername!r}")


def clean_headers(
    headers: Iterable[tuple[str, str]],
    peer: str,
    target: ProxyTarget | None,
    mac: str | None = None,
) -> CIMultiDict[str]:
    """The caller's headers with identity claims and hop-by-hop fields dropped, then the
    proxy's own: ``X-Forwarded-For: <peer>``, the SYN's source MAC if known, and the target's
    network/router header (added: every caller's copy was dropped). Each name is lowered
    once."""
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower.startswith(SPOOFABLE_PREFIXES):
            continue
        out.add(name, value)
    out.add(FORWARDED_FOR, peer)
    if mac is not None:
        out.add(SOURCE_MAC_HEADER, mac)
    if target is not None:
        out.add(*target.header)
    return out
