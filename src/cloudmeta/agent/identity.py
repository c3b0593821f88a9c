"""Who is asking, and the agent's proof of it: pure functions, no I/O.

Neutron identifies a caller by (IP, networks). An IPv6 link-local caller is not in the port
database by address, and its address proves nothing (stable-privacy, temporary and static
addresses carry no MAC; an EUI-64 one can be chosen by any guest), so it is found by its MAC
(port security enforces frames' and neighbour discovery's): the proxy reads the namespace's
neighbour entry for it and the connection's saved SYN (:mod:`cloudmeta.linux.peer`), or, in
haproxy mode, the agent reads the neighbour table.
IPv4 and global IPv6 callers are found by address (port security limits them to the port's
fixed IPs).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cloudmeta.agent.errors import AgentError
from cloudmeta.linux.peer import Neighbour
from cloudmeta.signing import sign_instance_id  # the one implementation, shared with the API

__all__ = ["Caller", "caller_from_forwarded", "mac_from_neighbours", "sign_instance_id"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The key a port is looked up by: an IP, or the frame's MAC for link-local callers.

    ``link_local`` callers without a ``mac`` cannot be resolved (the agent answers 404);
    ``zone`` is the interface index the proxy saw the connection on, when it knows it."""

    ip: str
    mac: str | None = None
    link_local: bool = False
    zone: int | None = None


def _mac(value: str) -> str:
    parts = value.strip().lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise AgentError(f"source MAC {value!r} is not a MAC address")
    try:
        return ":".join(f"{int(p, 16):02x}" for p in parts)
    except ValueError as exc:
        raise AgentError(f"source MAC {value!r} is not a MAC address") from exc


@functools.lru_cache(maxsize=8192)
def caller_from_forwarded(value: str, mac: str | None = None) -> Caller:
    """Parse the proxy's ``X-Forwarded-For`` (one address, a link-local one maybe with
    ``%<ifindex>``) and the frame's source MAC the proxy saw, if any, into a lookup key
    (memoised: the same few thousand callers ask again and again)."""
    text, _, zone = value.strip().partition("%")
    try:
        ip = ipaddress.ip_address(text)
    except ValueError as exc:
        raise AgentError(f"X-Forwarded-For {value!r} is not one IP address") from exc
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return Caller(ip=str(ip.ipv4_mapped))
        if ip.is_link_local:
            return Caller(
                ip=str(ip),
                mac=_mac(mac) if mac else None,
                link_local=True,
                zone=int(zone) if zone.isdigit() else None,
            )
    return Caller(ip=str(ip))


def mac_from_neighbours(caller: Caller, table: Iterable[Neighbour]) -> str | None:
    """The one MAC the namespace's neighbour table has for ``caller`` (on its interface when
    the zone is known); None for none or several (two guests claiming one address)."""
    macs = {
        n.mac
        for n in table
        if n.address == caller.ip and (caller.zone is None or n.ifindex == caller.zone)
    }
    return macs.pop() if len(macs) == 1 else None
