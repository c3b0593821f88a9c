"""What the DHCP agent decides for a network, as pure functions (Neutron's rules, CONTRACTS §4d-4f).

Which subnets are isolated, whether metadata is served through DHCP, which next hop the
169.254.169.254 host route gets, which addresses the DHCP interface carries; the admin API
allocates the DHCP port's address itself, as Neutron's IPAM does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cloudmeta.dhcp.model import (
    METADATA_V4_CIDR,
    METADATA_V6_CIDR,
    ROUTER_INTERFACE_OWNERS,
    NetworkBundle,
    Port,
    Subnet,
)

if TYPE_CHECKING:
    from cloudmeta.config import Config

__all__ = [
    "ONLINK",
    "MetadataPolicy",
    "dhcp_ips_by_subnet",
    "interface_cidrs",
    "isolated_subnets",
    "metadata_route_ip",
    "should_enable_metadata",
    "subnet_routes",
    "subnet_signature",
]

ONLINK = "0.0.0.0"  # an option 121 router meaning "on-link" (RFC 3442)


@dataclass(frozen=True, slots=True)
class MetadataPolicy:
    """The two switches of Neutron's DHCP agent that decide metadata through DHCP, and
    cloudmeta's ``distributed_metadata``: metadata answered on every compute node (a localport,
    :mod:`cloudmeta.agent.localport`), so the DHCP agent only pushes the on-link route."""

    force_metadata: bool = False
    enable_isolated_metadata: bool = False
    distributed: bool = False

    @classmethod
    def of(cls, config: Config) -> MetadataPolicy:
        return cls(
            config.force_metadata, config.enable_isolated_metadata, config.distributed_metadata
        )


def isolated_subnets(bundle: NetworkBundle) -> dict[str, bool]:
    """A subnet is isolated unless a router interface port holds its gateway IP."""
    router_ips = {
        f.ip_address
        for p in bundle.ports
        if p.device_owner in ROUTER_INTERFACE_OWNERS
        for f in p.fixed_ips
    }
    return {s.id: not (s.gateway_ip and s.gateway_ip in router_ips) for s in bundle.subnets}


def should_enable_metadata(bundle: NetworkBundle, policy: MetadataPolicy) -> bool:
    """Whether this network gets 169.254.169.254 on the DHCP port and a metadata proxy."""
    dhcp_subnets = bundle.dhcp_subnets
    if not dhcp_subnets or policy.distributed:
        return False
    if policy.force_metadata:
        return True
    if not policy.enable_isolated_metadata:
        return False
    isolated = isolated_subnets(bundle)
    return any(isolated[s.id] for s in dhcp_subnets)


def dhcp_ips_by_subnet(bundle: NetworkBundle, port: Port | None) -> dict[str, str]:
    """The DHCP port's address in each DHCP subnet (only addresses inside the subnet's CIDR)."""
    if port is None:
        return {}
    subnets = {s.id: s for s in bundle.dhcp_subnets}
    found: dict[str, str] = {}
    for fixed in port.fixed_ips:
        subnet = subnets.get(fixed.subnet_id)
        if subnet and ipaddress.ip_address(fixed.ip_address) in subnet.network:
            found.setdefault(subnet.id, fixed.ip_address)
    return found


def metadata_route_ip(
    subnet: Subnet,
    policy: MetadataPolicy,
    isolated: bool,
    dhcp_ip: str | None,
) -> str | None:
    """Next hop of ``169.254.169.254/32`` in option 121 for one v4 subnet, or None.

    Only the DHCP port: unlike Neutron, a routed subnet gets no ``169.254.169.254 via
    <gateway>`` route (issue 6); its default route already leads into the router's path.
    With ``distributed`` every v4 subnet gets ``0.0.0.0`` (on-link, ``dev <if>``): the
    instance's ARP for 169.254.169.254 is answered by its own compute node's localport, and no
    network node stands in the path (issue 14).
    """
    if subnet.ip_version != 4:
        return None
    if policy.distributed:
        return ONLINK
    if (policy.force_metadata or (isolated and policy.enable_isolated_metadata)) and dhcp_ip:
        return dhcp_ip
    return None


def subnet_routes(
    subnet: Subnet,
    bundle: NetworkBundle,
    policy: MetadataPolicy,
    dhcp_ips: Mapping[str, str],
) -> list[str]:
    """Option 121/249 entries ``dest,nexthop`` for a v4 subnet (empty: send no option 121).

    Host routes, then the metadata route, then the other v4 subnets on-link at the front, then
    the default route last, because a client that honours 121 ignores option 3 (RFC 3442).
    """
    if subnet.ip_version != 4:
        return []
    gateway = subnet.gateway_ip
    routes: list[str] = []
    for route in subnet.host_routes:
        if ipaddress.ip_network(route.destination, strict=False).prefixlen == 0:
            gateway = gateway or route.nexthop
        else:
            routes.append(f"{route.destination},{route.nexthop}")
    isolated = isolated_subnets(bundle)[subnet.id]
    via = metadata_route_ip(subnet, policy, isolated, dhcp_ips.get(subnet.id))
    if via:
        routes.append(f"{METADATA_V4_CIDR},{via}")
    for other in bundle.dhcp_subnets:
        if other.ip_version == 4 and other.id != subnet.id:
            routes.insert(0, f"{other.network},0.0.0.0")
    if routes and gateway:
        routes.append(f"0.0.0.0/0,{gateway}")
    return routes


def interface_cidrs(bundle: NetworkBundle, port: Port | None, policy: MetadataPolicy) -> list[str]:
    """Addresses the DHCP interface must carry: its port's IPs, then the metadata addresses."""
    subnets = {s.id: s for s in bundle.dhcp_subnets}
    cidrs = [
        f"{ip}/{subnets[subnet_id].network.prefixlen}"
        for subnet_id, ip in dhcp_ips_by_subnet(bundle, port).items()
    ]
    if should_enable_metadata(bundle, policy):
        cidrs.append(METADATA_V4_CIDR)
        if any(s.ip_version == 6 for s in bundle.dhcp_subnets):
            cidrs.append(METADATA_V6_CIDR)
    return cidrs


def subnet_signature(bundle: NetworkBundle, host: str = "") -> tuple[object, ...]:
    """What needs a dnsmasq restart when it changes (command line, subnets, own addresses).

    Anything else (ports, routers) is a rewrite of the files and a SIGHUP.
    """
    port = bundle.dhcp_port(host)
    return (bundle.network.mtu, bundle.dhcp_subnets, port.fixed_ips if port else ())
