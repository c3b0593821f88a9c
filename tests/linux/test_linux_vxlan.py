"""VXLAN between two namespaces over an underlay bridge: head-end replication to known peers."""

from __future__ import annotations

import pytest
from linux_scratch import Scratch

from cloudmeta import linux
from cloudmeta.linux.vxlan import create_vxlan, flood_peers, set_flood_peers

pytestmark = pytest.mark.root


async def test_vxlan_carries_a_bridge_to_the_peers_it_floods_to(scratch: Scratch) -> None:
    underlay = scratch.namespace("ul")
    await linux.create_bridge(underlay, "cmt-ulbr", mtu=9000)
    nodes = [scratch.namespace("n1"), scratch.namespace("n2")]
    guests = [scratch.namespace("g1"), scratch.namespace("g2")]
    vtep = ["203.0.113.1", "203.0.113.2"]
    for i, node in enumerate(nodes):
        await linux.plug_veth(
            node,
            "ul0",
            mac=f"02:00:00:00:00:0{i + 1}",
            host_ifname=f"cmt-ulp{i}",
            bridge="cmt-ulbr",
            mtu=9000,
            bridge_namespace=underlay,
        )
        await linux.add_address(node, "ul0", f"{vtep[i]}/24")
        await linux.create_bridge(node, "cmt-brq")
        for _ in range(2):  # idempotent
            await create_vxlan(node, "cmt-vx", vni=4242, local=vtep[i], bridge="cmt-brq")
        await set_flood_peers(node, "cmt-vx", {vtep[1 - i], "203.0.113.99"})
        assert await flood_peers(node, "cmt-vx") == {vtep[1 - i], "203.0.113.99"}
        await set_flood_peers(node, "cmt-vx", {vtep[1 - i]})  # a peer gone: its entry goes
        assert await flood_peers(node, "cmt-vx") == {vtep[1 - i]}
        links = {link.name: link for link in await linux.list_links(node)}
        assert links["cmt-vx"].kind == "vxlan" and links["cmt-vx"].master == links["cmt-brq"].index
        await linux.plug_veth(
            guests[i],
            "eth0",
            mac=f"02:00:00:00:01:0{i + 1}",
            host_ifname=f"cmt-tap{i}",
            bridge="cmt-brq",
            bridge_namespace=node,
        )
        await linux.add_address(guests[i], "eth0", f"192.0.2.{i + 1}/24")
    # ARP is flooded to the peer, the reply comes back: the guests reach each other.
    assert await linux.ping(guests[0], "192.0.2.2")
    # Without the flood entry nothing crosses (learning alone cannot find the peer).
    await set_flood_peers(nodes[0], "cmt-vx", set())
    await linux.run(["ip", "neigh", "flush", "all"], namespace=guests[0])
    assert not await linux.ping(guests[0], "192.0.2.2")
