"""The DHCP port's plumbing (Neutron's DeviceManager): namespace, veth to the bridge, addresses.

Idempotent: called on every sync, it converges the namespace on what the inventory says and
leaves a healthy interface (and the dnsmasq bound to it) alone.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cloudmeta import linux
from cloudmeta.dhcp.model import METADATA_V6_CIDR, NetworkBundle
from cloudmeta.linux.names import link_name

__all__ = ["DhcpDevice", "destroy_device", "setup_device"]


@dataclass(frozen=True, slots=True)
class DhcpDevice:
    """Names of one network's DHCP plumbing."""

    namespace: str
    ifname: str  # inside the namespace, carries the port's MAC and addresses
    host_ifname: str  # the other end of the veth, on the network's bridge
    bridge: str
    bridge_namespace: str | None = None

    @classmethod
    def for_port(
        cls,
        namespace: str,
        device_prefix: str,
        port_id: str,
        bridge: str,
        bridge_namespace: str | None = None,
    ) -> DhcpDevice:
        return cls(
            namespace=namespace,
            ifname=link_name(device_prefix, "ns-", port_id),
            host_ifname=link_name(device_prefix, "tap", port_id),
            bridge=bridge,
            bridge_namespace=bridge_namespace,
        )


def _managed(cidr: str) -> bool:
    """Addresses the agent owns on the interface (the kernel's own link-local one is not)."""
    iface = ipaddress.ip_interface(cidr)
    return not (iface.version == 6 and iface.ip.is_link_local and cidr != METADATA_V6_CIDR)


async def setup_device(
    device: DhcpDevice, bundle: NetworkBundle, mac: str, cidrs: Sequence[str]
) -> None:
    """Namespace, bridge, veth with ``mac``, exactly ``cidrs`` on it, default route."""
    linux.create_namespace(device.namespace)
    linux.set_sysctl(device.namespace, "net.ipv4.ip_nonlocal_bind", 1)
    mtu = bundle.network.mtu or None
    await linux.create_bridge(device.bridge_namespace, device.bridge)
    await linux.plug_veth(
        device.namespace,
        device.ifname,
        mac=mac,
        host_ifname=device.host_ifname,
        bridge=device.bridge,
        mtu=mtu,
        bridge_namespace=device.bridge_namespace,
    )
    linux.set_sysctl(device.namespace, f"net.ipv6.conf.{device.ifname}.accept_ra", 0)
    await sync_addresses(device, cidrs)
    await _default_route(device, bundle)


async def sync_addresses(device: DhcpDevice, cidrs: Sequence[str]) -> None:
    """Add what is missing, remove what the agent put there and no longer wants."""
    present = {a.cidr for a in await linux.list_addresses(device.namespace, device.ifname)}
    wanted = [str(ipaddress.ip_interface(c)) for c in cidrs]
    for cidr in wanted:
        if cidr not in present:
            await linux.add_address(device.namespace, device.ifname, cidr, nodad=True)
    for cidr in present - set(wanted):
        if _managed(cidr):
            await linux.delete_address(device.namespace, device.ifname, cidr)


async def _default_route(device: DhcpDevice, bundle: NetworkBundle) -> None:
    gateway = next(
        (s.gateway_ip for s in bundle.dhcp_subnets if s.ip_version == 4 and s.gateway_ip), None
    )
    if gateway:
        await linux.add_route(device.namespace, "default", via=gateway, dev=device.ifname)
    else:
        await linux.delete_route(device.namespace, "default")


async def destroy_device(device: DhcpDevice) -> None:
    """Remove the veth (both ends) and the namespace; the bridge stays for the instances."""
    if linux.namespace_exists(device.namespace):
        await linux.delete_link(device.namespace, device.ifname)
        linux.delete_namespace(device.namespace)
    await linux.delete_link(device.bridge_namespace, device.host_ifname)
