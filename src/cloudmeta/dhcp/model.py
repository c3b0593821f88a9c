"""Plain data the DHCP agent works on, parsed once from the admin API's ``/networks/{id}/dhcp``.

The renderers and decisions take these frozen records, never JSON dicts or HTTP clients, so
they are tested with literals.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cloudmeta.scheduler import dhcp_device_id

__all__ = [
    "DHCP_DEVICE_OWNER",
    "METADATA_V4_CIDR",
    "METADATA_V4_IP",
    "METADATA_V6_CIDR",
    "METADATA_V6_IP",
    "ROUTER_INTERFACE_OWNERS",
    "BundleError",
    "FixedIp",
    "HostRoute",
    "Network",
    "NetworkBundle",
    "Port",
    "Subnet",
    "dhcp_device_id",
]

METADATA_V4_IP = "169.254.169.254"
METADATA_V4_CIDR = "169.254.169.254/32"
METADATA_V6_IP = "fe80::a9fe:a9fe"
# /128, not neutron-lib's /64, and added with ``nodad``: never tentative, and with two DHCP
# agents on a network each namespace holds it (Neutron LP#1953165: DAD let only one).
METADATA_V6_CIDR = "fe80::a9fe:a9fe/128"
DHCP_DEVICE_OWNER = "network:dhcp"
ROUTER_INTERFACE_OWNERS = frozenset(
    {
        "network:router_interface",
        "network:router_interface_distributed",
        "network:ha_router_replicated_interface",
    }
)


class BundleError(ValueError):
    """The admin API answered a network bundle this agent cannot read (say which field)."""


@dataclass(frozen=True, slots=True)
class HostRoute:
    destination: str
    nexthop: str


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    network_id: str
    cidr: str
    ip_version: int = 4
    gateway_ip: str | None = None
    enable_dhcp: bool = True
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[HostRoute, ...] = ()
    allocation_pools: tuple[tuple[str, str], ...] = ()
    ipv6_address_mode: str | None = None
    ipv6_ra_mode: str | None = None

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr, strict=False)

    @property
    def serves_dhcp(self) -> bool:
        """True when the DHCP agent serves it (Neutron: every ``enable_dhcp`` subnet, a SLAAC
        one too: the DHCP port gets an address there and dnsmasq may send its RAs)."""
        return self.enable_dhcp

    @property
    def address_mode(self) -> str | None:
        """How instances get their IPv6 address: ``ipv6_address_mode``, else the RA's mode."""
        if self.ip_version != 6:
            return None
        return self.ipv6_address_mode or self.ipv6_ra_mode

    @property
    def dhcpv6_stateful(self) -> bool:
        """A v6 subnet whose addresses dnsmasq hands out (stateful, or no mode at all)."""
        return self.ip_version == 6 and self.address_mode in (None, "dhcpv6-stateful")


@dataclass(frozen=True, slots=True)
class FixedIp:
    subnet_id: str
    ip_address: str


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    network_id: str
    mac_address: str
    fixed_ips: tuple[FixedIp, ...] = ()
    device_owner: str = ""
    device_id: str = ""
    hostname: str | None = None


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    mtu: int = 1500
    name: str = ""


@dataclass(frozen=True, slots=True)
class NetworkBundle:
    """Everything about one network the agent needs, as one consistent snapshot."""

    network: Network
    subnets: tuple[Subnet, ...] = ()
    ports: tuple[Port, ...] = ()
    routers: tuple[str, ...] = field(default=())

    @property
    def dhcp_subnets(self) -> tuple[Subnet, ...]:
        return tuple(s for s in self.subnets if s.serves_dhcp)

    def dhcp_port(self, host: str = "") -> Port | None:
        """The own port of the agent on ``host`` on the network, if the inventory has one."""
        wanted = dhcp_device_id(self.network.id, host)
        for port in self.ports:
            if port.device_owner == DHCP_DEVICE_OWNER and port.device_id == wanted:
                return port
        return None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NetworkBundle:
        """Read the admin API's bundle; a missing field raises :class:`BundleError`."""
        try:
            net = data["network"]
            network = Network(
                id=str(net["id"]), mtu=int(net.get("mtu") or 0), name=net.get("name") or ""
            )
            subnets = tuple(_subnet(s) for s in data.get("subnets") or ())
            ports = tuple(_port(p) for p in data.get("ports") or ())
            routers = tuple(_router_id(r) for r in data.get("routers") or ())
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"network bundle from the admin API lacks or mistypes {exc}") from exc
        return cls(network=network, subnets=subnets, ports=ports, routers=routers)


def _router_id(item: Any) -> str:
    return str(item["id"]) if isinstance(item, Mapping) else str(item)


def _subnet(data: Mapping[str, Any]) -> Subnet:
    return Subnet(
        id=str(data["id"]),
        network_id=str(data["network_id"]),
        cidr=str(data["cidr"]),
        ip_version=int(data.get("ip_version") or 4),
        gateway_ip=data.get("gateway_ip") or None,
        enable_dhcp=bool(data.get("enable_dhcp", True)),
        dns_nameservers=tuple(str(n) for n in data.get("dns_nameservers") or ()),
        host_routes=tuple(
            HostRoute(str(r["destination"]), str(r["nexthop"]))
            for r in data.get("host_routes") or ()
        ),
        allocation_pools=tuple(
            (str(p["start"]), str(p["end"])) for p in data.get("allocation_pools") or ()
        ),
        ipv6_address_mode=data.get("ipv6_address_mode") or None,
        ipv6_ra_mode=data.get("ipv6_ra_mode") or None,
    )


def _port(data: Mapping[str, Any]) -> Port:
    return Port(
        id=str(data["id"]),
        network_id=str(data["network_id"]),
        mac_address=str(data["mac_address"]).lower(),
        fixed_ips=tuple(
            FixedIp(str(f["subnet_id"]), str(f["ip_address"])) for f in data.get("fixed_ips") or ()
        ),
        device_owner=data.get("device_owner") or "",
        device_id=data.get("device_id") or "",
        hostname=data.get("hostname") or data.get("dns_name") or None,
    )
