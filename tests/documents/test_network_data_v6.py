"""network_data.json for each IPv6 mode: Nova's types (``nova/virt/netutils.py``)."""

from __future__ import annotations

import json

from cloudmeta.documents import FixedIp, Instance, Network, Port, Subnet, network_data

NET = Network(id="n-6", name="v6only", mtu=1500)


def _types(mode: str | None) -> list[tuple[str, str, str]]:
    subnet = Subnet(
        id="s-6",
        network_id="n-6",
        ip_version=6,
        cidr="2001:db8:3::/64",
        gateway_ip="2001:db8:3::1",
        ipv6_address_mode=mode,
    )
    port = Port(
        id="p-6",
        network=NET,
        mac_address="fa:16:3e:00:00:05",
        fixed_ips=(FixedIp("2001:db8:3:0:f816:3eff:fe00:5", subnet),),
    )
    vm = Instance(id="i-6", name="v6", hostname="v6", project_id="p", ports=(port,))
    doc = network_data(vm)
    assert doc is not None
    return [
        (n["type"], n["ip_address"], n["netmask"]) for n in json.loads(json.dumps(doc))["networks"]
    ]


def test_each_ipv6_mode_has_novas_type() -> None:
    addr, mask = "2001:db8:3:0:f816:3eff:fe00:5", "ffff:ffff:ffff:ffff::"
    assert _types("slaac") == [("ipv6_slaac", addr, mask)]
    assert _types("dhcpv6-stateful") == [("ipv6_dhcpv6-stateful", addr, mask)]
    assert _types("dhcpv6-stateless") == [("ipv6_dhcpv6-stateless", addr, mask)]
    assert _types(None) == [("ipv6", addr, mask)]  # no mode: static, as Nova


def test_an_ipv6_only_instance_has_one_link_and_a_default_route_via_the_gateway() -> None:
    subnet = Subnet(
        id="s-6", network_id="n-6", ip_version=6, cidr="2001:db8:3::/64",
        gateway_ip="2001:db8:3::1", ipv6_address_mode="slaac",
    )  # fmt: skip
    port = Port(id="p-6", network=NET, mac_address="fa:16:3e:00:00:05",
                fixed_ips=(FixedIp("2001:db8:3:0:f816:3eff:fe00:5", subnet),))  # fmt: skip
    doc = network_data(Instance(id="i-6", name="v6", hostname="v6", project_id="p", ports=(port,)))
    assert doc is not None
    (link,) = doc["links"]
    (net,) = doc["networks"]
    assert link["ethernet_mac_address"] == "fa:16:3e:00:00:05" and net["link"] == link["id"]
    assert net["routes"] == [{"network": "::", "netmask": "::", "gateway": "2001:db8:3::1"}]
