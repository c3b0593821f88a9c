"""The wires of a multi-node lab: the underlay between nodes and each network's VXLAN on it.

The underlay is one bridge in a namespace of ours (``<prefix>underlay``); every node's bridge
namespace has a port ``ul0`` on it with a 203.0.113.x address. Each tenant network gets, on
every node, its bridge (the one the agents plug into) and a VXLAN device on it (the network's
VNI, flooding to every other live node: Neutron linuxbridge's head-end replication). All
kernel work is :mod:`cloudmeta.linux`'s; this module only says what goes where.
"""

from __future__ import annotations

import hashlib
import ipaddress

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.lab.nodes.topology import (
    UNDERLAY_CIDR,
    UNDERLAY_IFACE,
    UNDERLAY_MTU,
    node_fabric,
    underlay_link,
    underlay_namespace,
    vni_of,
    vxlan_link,
)
from cloudmeta.lab.state import LabNode
from cloudmeta.linux.names import bridge_name
from cloudmeta.linux.vxlan import create_vxlan, set_flood_peers

__all__ = ["build_underlay", "ensure_overlay"]


def _mac(seed: str) -> str:
    """A stable, locally administered MAC for a node's underlay port."""
    digest = hashlib.sha256(seed.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def _live(nodes: list[LabNode]) -> list[LabNode]:
    return [n for n in nodes if n.underlay_ip and not n.dead]


async def build_underlay(config: Config, nodes: list[LabNode]) -> None:
    """The underlay bridge and every node's bridge namespace with its ``ul0`` on it."""
    underlay = underlay_namespace(config)
    bridge = f"{config.device_prefix}ul"
    await linux.create_bridge(underlay, bridge, mtu=UNDERLAY_MTU)
    prefixlen = ipaddress.ip_network(UNDERLAY_CIDR).prefixlen
    for node in _live(nodes):
        fabric = node_fabric(config, node.name)
        if not linux.namespace_exists(fabric):
            linux.create_namespace(fabric)
        await linux.set_link(fabric, "lo", up=True)
        await linux.plug_veth(
            fabric,
            UNDERLAY_IFACE,
            mac=_mac(f"{config.namespace_prefix}{node.name}"),
            host_ifname=underlay_link(config, node),
            bridge=bridge,
            mtu=UNDERLAY_MTU,
            bridge_namespace=underlay,
        )
        await linux.add_address(fabric, UNDERLAY_IFACE, f"{node.underlay_ip}/{prefixlen}")


async def ensure_overlay(config: Config, nodes: list[LabNode], network_id: str) -> None:
    """On every live node: the network's bridge and VXLAN device, flooding to the others."""
    live = _live(nodes)
    bridge = bridge_name(config.device_prefix, network_id)
    vxlan = vxlan_link(config, network_id)
    for node in live:
        assert node.underlay_ip is not None
        fabric = node_fabric(config, node.name)
        await linux.create_bridge(fabric, bridge)
        await create_vxlan(
            fabric, vxlan, vni=vni_of(network_id), local=node.underlay_ip, bridge=bridge
        )
        peers = {n.underlay_ip for n in live if n.name != node.name and n.underlay_ip}
        await set_flood_peers(fabric, vxlan, peers)
