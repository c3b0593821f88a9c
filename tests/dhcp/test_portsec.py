"""Port security rendering (pure): which ports are filtered and the exact ebtables document."""

from __future__ import annotations

import ipaddress

from cloudmeta.dhcp.model import FixedIp, Network, NetworkBundle, Port
from cloudmeta.dhcp.portsec import (
    PortFilter,
    eui64_link_local,
    nd_guard_chains,
    port_filters,
    render_ruleset,
)

_NET = "5d0c3a71-0000-4000-8000-000000000001"
_VM = Port(
    id="a1b2c3d4e5f6-0000",
    network_id=_NET,
    mac_address="FA:16:3E:00:00:05",
    fixed_ips=(FixedIp("s6", "2001:db8::5"), FixedIp("s4", "192.0.2.10")),
    device_owner="compute:nova",
)
_DHCP = Port(
    id="dddddddddddd",
    network_id=_NET,
    mac_address="fa:16:3e:00:00:02",
    fixed_ips=(FixedIp("s4", "192.0.2.2"),),
    device_owner="network:dhcp",
)
_ROUTER = Port(
    id="rrrrrrrrrrrr",
    network_id=_NET,
    mac_address="fa:16:3e:00:00:01",
    fixed_ips=(FixedIp("s4", "192.0.2.1"),),
    device_owner="network:router_interface",
)
_REPO = Port(
    id="0123456789ab",
    network_id=_NET,
    mac_address="fa:16:3e:00:00:09",
    fixed_ips=(FixedIp("s4", "192.0.2.9"),),
    device_owner="lab:repo",
)

GOLDEN = """\
*nat
:PREROUTING ACCEPT
:OUTPUT ACCEPT
:POSTROUTING ACCEPT
:cm-cmt-tapa1b2c3d4 RETURN
-A PREROUTING -i cmt-tapa1b2c3d4 -j cm-cmt-tapa1b2c3d4
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p ARP --arp-mac-src fa:16:3e:00:00:05 \
--arp-ip-src 192.0.2.10 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p ARP --arp-mac-src fa:16:3e:00:00:05 \
--arp-ip-src 0.0.0.0 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p IPv4 --ip-src 192.0.2.10 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p IPv4 --ip-src 0.0.0.0 --ip-proto udp \
--ip-sport 68 --ip-dport 67 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p IPv6 --ip6-src 2001:db8::5/128 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p IPv6 --ip6-src ::/128 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -s fa:16:3e:00:00:05 -p IPv6 --ip6-src fe80::/64 -j ACCEPT
-A cm-cmt-tapa1b2c3d4 -j DROP
"""


def test_golden_document_for_one_instance_port() -> None:
    bundle = NetworkBundle(network=Network(_NET), ports=(_VM, _DHCP, _ROUTER))
    assert render_ruleset(port_filters(bundle, "cmt-")) == GOLDEN


def test_network_ports_are_trusted_other_ports_filtered() -> None:
    bundle = NetworkBundle(network=Network(_NET), ports=(_ROUTER, _REPO, _DHCP, _VM))
    links = [f.link for f in port_filters(bundle, "cmt-")]
    assert links == ["cmt-tap01234567", "cmt-tapa1b2c3d4"]


def test_empty_ruleset_still_replaces_the_table() -> None:
    assert render_ruleset([]) == "*nat\n:PREROUTING ACCEPT\n:OUTPUT ACCEPT\n:POSTROUTING ACCEPT\n"


def test_every_port_chain_ends_in_drop_and_is_jumped_to_once() -> None:
    filters = [PortFilter(f"tap{i}", f"fa:16:3e:00:00:{i:02x}", (f"192.0.2.{i}",)) for i in (3, 1)]
    lines = render_ruleset(filters).splitlines()
    assert lines.index(":cm-tap1 RETURN") < lines.index(":cm-tap3 RETURN")  # stable order
    for f in filters:
        assert lines.count(f"-A PREROUTING -i {f.link} -j {f.chain}") == 1
        own = [line for line in lines if line.startswith(f"-A {f.chain} ")]
        assert own[-1] == f"-A {f.chain} -j DROP"
        assert all(f"-s {f.mac} " in line for line in own[:-1])


def test_eui64_link_local_matches_the_kernels() -> None:
    assert eui64_link_local("fa:16:3e:00:00:05") == "fe80::f816:3eff:fe00:5"
    assert eui64_link_local("02:00:00:00:00:01") == "fe80::ff:fe00:1"
    assert ipaddress.ip_address(eui64_link_local("00:11:22:33:44:55")).is_link_local


def test_neighbour_discovery_may_announce_only_the_ports_own_mac() -> None:
    chain, gate = nd_guard_chains([PortFilter("cmt-tapa1b2c3d4", "fa:16:3e:00:00:05", ())])
    # Once per frame as it enters the bridge (raw PREROUTING), not once per port it is flooded
    # to (FORWARD); only neighbour discovery goes on to the ports' rules.
    assert (gate.table, gate.name, gate.jump_from) == ("raw", "cloudmeta-nd", "PREROUTING")
    assert gate.rules == tuple(
        f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j cloudmeta-nd-ports"
        for t in (133, 134, 135, 136, 137)
    )
    assert (chain.table, chain.name, chain.jump_from) == ("raw", "cloudmeta-nd-ports", None)
    head = "-m physdev --physdev-in cmt-tapa1b2c3d4 -p ipv6-icmp -m icmp6 --icmpv6-type"
    next_header = "4&0xff00=0x3a00"
    assert chain.rules == (
        # router solicitation: no option, or its own MAC first
        f'{head} 133 -m u32 --u32 "4>>16=0x8&&{next_header}" -j RETURN',
        f'{head} 133 -m u32 --u32 "{next_header}&&48>>16=0x101&&48&0xffff=0xfa16'
        '&&52=0x3e000005" -j RETURN',
        # neighbour solicitation (source link-layer option) and advertisement (target)
        f'{head} 135 -m u32 --u32 "4>>16=0x18&&{next_header}" -j RETURN',
        f'{head} 135 -m u32 --u32 "{next_header}&&64>>16=0x101&&64&0xffff=0xfa16'
        '&&68=0x3e000005" -j RETURN',
        f'{head} 136 -m u32 --u32 "4>>16=0x18&&{next_header}" -j RETURN',
        f'{head} 136 -m u32 --u32 "{next_header}&&64>>16=0x201&&64&0xffff=0xfa16'
        '&&68=0x3e000005" -j RETURN',
        f"{head} 133 -j DROP",
        f"{head} 135 -j DROP",
        f"{head} 136 -j DROP",
        f"{head} 134 -j DROP",  # router advertisements and redirects: never from an instance
        f"{head} 137 -j DROP",
    )
