"""Who is asking, and the agent's proof of it: pure functions, no I/O.

Neutron identifies a caller by (IP, networks); an IPv6 link-local caller is not in the port
database by address, so it is found by the MAC its EUI-64 interface id encodes.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass

from cloudmeta.agent.errors import AgentError
from cloudmeta.signing import sign_instance_id  # the one implementation, shared with the API

__all__ = ["Caller", "caller_from_forwarded", "mac_from_eui64", "sign_instance_id"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The key a port is looked up by: an IP, or a MAC for IPv6 link-local callers."""

    ip: str
    mac: str | None = None


def mac_from_eui64(address: ipaddress.IPv6Address) -> str | None:
    """The MAC in a modified EUI-64 interface id (``xx:xx:xx:ff:fe:xx:xx:xx``, U/L bit
    flipped); None for other interface ids (privacy or stable-secret addresses)."""
    raw = address.packed[8:]
    if raw[3:5] != b"\xff\xfe":
        return None
    mac = bytes([raw[0] ^ 0x02, raw[1], raw[2], raw[5], raw[6], raw[7]])
    return ":".join(f"{b:02x}" for b in mac)


@functools.lru_cache(maxsize=8192)
def caller_from_forwarded(value: str) -> Caller:
    """Parse the proxy's ``X-Forwarded-For`` (one address) into a lookup key (memoised: the
    same few thousand callers ask again and again)."""
    text = value.strip().split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError as exc:
        raise AgentError(f"X-Forwarded-For {value!r} is not one IP address") from exc
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return Caller(ip=str(ip.ipv4_mapped))
        if ip.is_link_local:
            return Caller(ip=str(ip), mac=mac_from_eui64(ip))
    return Caller(ip=str(ip))
