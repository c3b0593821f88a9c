"""IPv6 in the lab (``lab up --ipv6``): which subnets, and what an instance shows of them.

The two demo networks become dual-stack and a third one has IPv6 only, one IPv6 address mode
each, so one lab exercises all three of Neutron's: the RAs (and DHCPv6) come from dnsmasq in
the network's DHCP namespace (``ipv6_ra_mode`` = ``ipv6_address_mode``, see dhcp/render.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.dhcp.model import METADATA_V6_IP
from cloudmeta.lab.state import LabInstance, LabState, edit_state

__all__ = [
    "IPV6_ONLY",
    "V6_SUBNETS",
    "V6Subnet",
    "add_subnet",
    "global_addresses",
    "metadata_source",
    "metadata_v6_neighbour",
    "path_of_mac",
    "status_fields",
    "url_host",
    "wait_metadata_path",
]


@dataclass(frozen=True, slots=True)
class V6Subnet:
    cidr: str
    mode: str  # ipv6_address_mode and ipv6_ra_mode


# demo network -> its IPv6 subnet with --ipv6 (the IPv4 subnets are cloud.DEMO_NETWORKS)
V6_SUBNETS = {
    "isolated": V6Subnet("2001:db8:1::/64", "dhcpv6-stateful"),
    "routed": V6Subnet("2001:db8:2::/64", "dhcpv6-stateless"),
}
# The IPv6-only network: no router, no IPv4 subnet; SLAAC, the case cloud-init struggles with.
IPV6_ONLY = ("ipv6-only", V6Subnet("2001:db8:3::/64", "slaac"))


async def wait_metadata_path(namespace: str, timeout: float = 30.0) -> bool:  # noqa: ASYNC109
    """Until ``fe80::a9fe:a9fe`` answers HTTP on ``namespace``'s ``eth0`` (any status: the
    neighbour, the REDIRECT and the proxy are there); False after ``timeout``.

    The lab asks from its repository's namespace, a port on the network like an instance's,
    before it boots instances: the router's IPv6 path is built asynchronously (after the
    interface is added), and cloud-init, asking the IPv6 URL first, would otherwise fall back
    to 169.254.169.254 on a routed network that was still being built, and never to IPv6."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    url = f"http://[{METADATA_V6_IP}%25eth0]/"
    while loop.time() < deadline:
        result = await linux.run(
            ["curl", "-gsS", "-o", "/dev/null", "--max-time", "1", url],
            namespace=namespace,
            check=False,
        )
        if result.returncode == 0:
            return True
        await asyncio.sleep(0.2)
    return False


def url_host(ip: str) -> str:
    """``ip`` as the host part of a URL (IPv6 in brackets)."""
    return f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip


_SOURCE = re.compile(r"Using metadata source: '([^']+)'")


def metadata_source(cloud_init_log: str) -> str | None:
    """The metadata URL cloud-init's OpenStack datasource settled on (its log says so)."""
    found = _SOURCE.findall(cloud_init_log)
    return found[-1] if found else None


async def global_addresses(namespace: str, ifname: str = "eth0") -> list[str]:
    """The global IPv6 addresses ``ifname`` has in ``namespace`` (what SLAAC or DHCPv6 gave)."""
    found = []
    for address in await linux.list_addresses(namespace, ifname):
        iface = ipaddress.ip_interface(address.cidr)
        if iface.version == 6 and address.scope == 0:  # RT_SCOPE_UNIVERSE: not link-local
            found.append(str(iface.ip))
    return found


async def metadata_v6_neighbour(namespace: str, ifname: str = "eth0") -> str | None:
    """The MAC that answered for ``fe80::a9fe:a9fe`` on ``ifname`` (the kernel's neighbour
    entry): which port the instance's IPv6 metadata requests went to, or None if none did."""
    result = await linux.run(
        ["ip", "-6", "-j", "neigh", "show", METADATA_V6_IP, "dev", ifname],
        namespace=namespace,
        check=False,
    )
    if result.returncode != 0:
        return None
    try:
        entries = json.loads(result.stdout or "[]")
    except ValueError:
        return None
    for entry in entries:
        mac = entry.get("lladdr")
        if mac:
            return str(mac).lower()
    return None


async def path_of_mac(client: AdminClient, network_id: str, mac: str | None) -> str:
    """``dhcp`` or ``router``: whose port ``mac`` is on the network (``-`` if nobody's)."""
    if mac is None:
        return "-"
    for port in await client.list_ports(network_id=network_id):
        if port["mac_address"].lower() == mac:
            owner = port["device_owner"]
            if owner == "network:dhcp":
                return "dhcp"
            if owner.startswith("network:router_interface"):
                return "router"
            return owner or "-"
    return "-"


async def add_subnet(
    config: Config,
    client: AdminClient,
    state: LabState,
    network_id: str,
    name: str,
    v6: V6Subnet,
) -> str:
    """The network's IPv6 subnet (RAs from its DHCP namespace, see lab/ipv6.py)."""
    subnet = await client.create_subnet(
        network_id,
        v6.cidr,
        name=f"{name}-subnet6",
        ipv6_address_mode=v6.mode,
        ipv6_ra_mode=v6.mode,
    )
    with edit_state(config, state) as record:
        net = record.networks[network_id]
        net.subnet6_id, net.ipv6_mode = subnet["id"], v6.mode
        if net.subnet_id is None:
            net.subnet_id, net.ipv4 = subnet["id"], False
    return str(subnet["id"])


async def status_fields(client: AdminClient, inst: LabInstance, ifname: str) -> dict[str, Any]:
    """The IPv6 columns: the addresses the instance has, and which port answered its
    requests to fe80::a9fe:a9fe (the neighbour entry's MAC: the DHCP port or the router's)."""
    try:
        have = await global_addresses(inst.namespace, ifname)
        mac = await metadata_v6_neighbour(inst.namespace, ifname)
    except linux.LinuxError as exc:
        return {"ip6": None, "path6": "-", "errors": [f"cannot read its IPv6 state: {exc}"]}
    errors = []
    if inst.ip6 not in have:
        shown = ", ".join(have) or "none"
        errors.append(f"IPv6: it does not have its port's {inst.ip6} (it has: {shown})")
    return {
        "ip6": inst.ip6 if inst.ip6 in have else None,
        "ipv6_addresses": have,
        "path6": await path_of_mac(client, inst.network_id, mac),
        "errors": errors,
    }
