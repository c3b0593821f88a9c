"""What one router looks like to the L3 agent, built from the admin API's JSON, and its names.

Pure: no I/O. The manager compares these values to decide what to change in a namespace.

Names (Neutron's, with the configured prefixes):
- namespace ``<namespace_prefix>qrouter-<router_id>`` (namespace names have no short limit);
- interface ``<device_prefix>qr-<port id>``, cut to Linux's 15 characters, and its veth peer
  on the network's bridge ``<device_prefix>tap<port id>`` likewise: the prefix and the stem
  are kept whole and the port id gets what is left (11 characters without a prefix, as
  Neutron; 8 with ``cmt-``), by :func:`cloudmeta.linux.names.link_name`, which refuses a
  prefix leaving fewer than 6 characters of the id (names would collide too easily).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cloudmeta.linux.names import link_name

__all__ = [
    "L3Error",
    "Router",
    "RouterInterface",
    "bridge_port_name",
    "interface_name",
    "interface_prefix",
    "router_from_api",
    "router_namespace",
]

NAMESPACE_STEM = "qrouter-"


class L3Error(Exception):
    """The L3 agent cannot build or understand a router; the message says what to fix."""


def router_namespace(namespace_prefix: str, router_id: str) -> str:
    return f"{namespace_prefix}{NAMESPACE_STEM}{router_id}"


def interface_prefix(device_prefix: str) -> str:
    """Every router interface name starts with this (iptables matches ``<it>+``)."""
    return f"{device_prefix}qr-"


def interface_name(device_prefix: str, port_id: str) -> str:
    """The router's end of the port, inside the router namespace."""
    return link_name(device_prefix, "qr-", port_id)


def bridge_port_name(device_prefix: str, port_id: str) -> str:
    """The other end of the veth, on the network's bridge (Neutron's ``tap`` + port id)."""
    return link_name(device_prefix, "tap", port_id)


@dataclass(frozen=True, slots=True)
class RouterInterface:
    """One router port: its network, its MAC and its subnets' gateway addresses with prefix."""

    port_id: str
    network_id: str
    mac_address: str
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]


@dataclass(frozen=True, slots=True)
class Router:
    id: str
    interfaces: tuple[RouterInterface, ...]


def _field(obj: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise L3Error(f"admin API answered a {what} without '{key}': {dict(obj)!r}") from None


def router_from_api(
    router: Mapping[str, Any],
    ports: Iterable[Mapping[str, Any]],
    subnets: Iterable[Mapping[str, Any]],
) -> Router:
    """Join a router with its ports (for MACs) and subnets (for prefix length and gateway).

    An interface whose port or subnet is missing (deleted meanwhile) or whose subnet has no
    gateway is left out: the next change brings the router back in line.
    """
    by_port = {_field(p, "id", "port"): p for p in ports}
    by_subnet = {_field(s, "id", "subnet"): s for s in subnets}
    found: dict[str, RouterInterface] = {}
    for item in _field(router, "interfaces", "router"):
        port = by_port.get(_field(item, "port_id", "router interface"))
        subnet = by_subnet.get(_field(item, "subnet_id", "router interface"))
        if port is None or subnet is None or not subnet.get("gateway_ip"):
            continue
        network = ipaddress.ip_network(_field(subnet, "cidr", "subnet"), strict=False)
        gateway = item.get("ip_address") or subnet["gateway_ip"]
        address = ipaddress.ip_interface(f"{gateway}/{network.prefixlen}")
        port_id = str(port["id"])
        known = found.get(port_id)
        found[port_id] = RouterInterface(
            port_id=port_id,
            network_id=str(_field(item, "network_id", "router interface")),
            mac_address=str(_field(port, "mac_address", "port")).lower(),
            addresses=(*known.addresses, address) if known else (address,),
        )
    interfaces = tuple(found[key] for key in sorted(found))
    return Router(id=str(_field(router, "id", "router")), interfaces=interfaces)
