"""Golden tests of the pure DHCP parts: Neutron's dnsmasq arguments, files and metadata rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudmeta.dhcp.decisions import (
    MetadataPolicy,
    dhcp_ips_by_subnet,
    interface_cidrs,
    isolated_subnets,
    should_enable_metadata,
    subnet_signature,
)
from cloudmeta.dhcp.model import BundleError, NetworkBundle, dhcp_device_id
from cloudmeta.dhcp.render import (
    DnsmasqFiles,
    DnsmasqSettings,
    addn_hosts_file,
    allocations,
    cmdline,
    hosts_file,
    opts_file,
)

NET = "5e1d4c3b-0000-4000-8000-000000000001"
SUB = "5e1d4c3b-0000-4000-8000-0000000000a1"
SUB2 = "5e1d4c3b-0000-4000-8000-0000000000a2"
SUB6 = "5e1d4c3b-0000-4000-8000-0000000000a6"

FORCE = MetadataPolicy(force_metadata=True)
ISOLATED = MetadataPolicy(enable_isolated_metadata=True)


def subnet(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": SUB,
        "network_id": NET,
        "ip_version": 4,
        "cidr": "192.0.2.0/24",
        "gateway_ip": "192.0.2.1",
        "allocation_pools": [{"start": "192.0.2.2", "end": "192.0.2.254"}],
        "dns_nameservers": [],
        "host_routes": [],
        "enable_dhcp": True,
        "ipv6_address_mode": None,
    }
    data.update(over)
    return data


def port(pid: str, mac: str, ip: str, owner: str = "compute:nova", sub: str = SUB, **over: Any):
    data: dict[str, Any] = {
        "id": pid,
        "network_id": NET,
        "mac_address": mac,
        "fixed_ips": [{"subnet_id": sub, "ip_address": ip}],
        "device_owner": owner,
        "device_id": f"dev-{pid}",
    }
    data.update(over)
    return data


DHCP_PORT = port(
    "p-dhcp", "fa:16:3e:00:00:02", "192.0.2.2", "network:dhcp", device_id=f"dhcp-{NET}"
)
VM_PORT = port("p-vm", "FA:16:3E:00:00:05", "192.0.2.5")
ROUTER_PORT = port("p-rtr", "fa:16:3e:00:00:01", "192.0.2.1", "network:router_interface")


def bundle(subnets: list[dict[str, Any]] | None = None, ports: list[Any] | None = None):
    return NetworkBundle.from_json(
        {
            "network": {"id": NET, "name": "n", "mtu": 1450},
            "subnets": subnets if subnets is not None else [subnet()],
            "ports": ports if ports is not None else [DHCP_PORT, VM_PORT],
            "routers": [],
        }
    )


def test_cmdline_matches_neutron_order(tmp_path: Path) -> None:
    files = DnsmasqFiles(tmp_path)
    cmd = cmdline(bundle(), files, "cmt-ns-1", DnsmasqSettings())
    assert cmd == [
        "/usr/sbin/dnsmasq",
        "--no-hosts",
        "--no-resolv",
        f"--pid-file={tmp_path}/pid",
        f"--dhcp-hostsfile={tmp_path}/host",
        f"--addn-hosts={tmp_path}/addn_hosts",
        f"--dhcp-optsfile={tmp_path}/opts",
        f"--dhcp-leasefile={tmp_path}/leases",
        "--dhcp-match=set:ipxe,175",
        "--dhcp-userclass=set:ipxe6,iPXE",
        "--interface=cmt-ns-1",
        "--bind-dynamic",
        f"--dhcp-range=set:subnet-{SUB},192.0.2.0,static,255.255.255.0,86400s",
        "--dhcp-option-force=option:mtu,1450",
        "--dhcp-lease-max=256",
        "--conf-file=/dev/null",
        "--port=0",
        "--domain=openstacklocal",
    ]


def test_cmdline_dns_servers_infinite_lease_and_v6(tmp_path: Path) -> None:
    v6 = subnet(
        id=SUB6,
        ip_version=6,
        cidr="2001:db8::/64",
        gateway_ip="2001:db8::1",
        ipv6_address_mode="dhcpv6-stateful",
        allocation_pools=[],
    )
    settings = DnsmasqSettings(lease_duration=-1, dns_servers=("192.0.2.53",), dns_domain="")
    cmd = cmdline(bundle([subnet(), v6]), DnsmasqFiles(tmp_path), "eth", settings)
    assert f"--dhcp-range=set:subnet-{SUB},192.0.2.0,static,255.255.255.0,infinite" in cmd
    assert f"--dhcp-range=set:subnet-{SUB6},2001:db8::,static,64,infinite" in cmd
    assert "--server=192.0.2.53" in cmd
    assert "--port=0" not in cmd
    assert not any(a.startswith("--domain") for a in cmd)
    assert f"--dhcp-lease-max={2**24}" in cmd


def test_slaac_and_disabled_subnets_get_no_range(tmp_path: Path) -> None:
    slaac = subnet(id=SUB6, ip_version=6, cidr="2001:db8::/64", ipv6_address_mode="slaac")
    off = subnet(id=SUB2, cidr="198.51.100.0/24", enable_dhcp=False)
    cmd = cmdline(bundle([subnet(), slaac, off]), DnsmasqFiles(tmp_path), "eth", DnsmasqSettings())
    assert [a for a in cmd if a.startswith("--dhcp-range")] == [
        f"--dhcp-range=set:subnet-{SUB},192.0.2.0,static,255.255.255.0,86400s"
    ]


def test_hosts_and_addn_hosts_files() -> None:
    b = bundle()
    settings = DnsmasqSettings()
    assert hosts_file(b, settings) == (
        "fa:16:3e:00:00:02,host-192-0-2-2.openstacklocal,192.0.2.2\n"
        "fa:16:3e:00:00:05,host-192-0-2-5.openstacklocal,192.0.2.5\n"
    )
    assert addn_hosts_file(b, settings) == (
        "192.0.2.2\thost-192-0-2-2.openstacklocal host-192-0-2-2\n"
        "192.0.2.5\thost-192-0-2-5.openstacklocal host-192-0-2-5\n"
    )


def test_v6_host_lines_are_tagged_and_bracketed() -> None:
    v6 = subnet(id=SUB6, ip_version=6, cidr="2001:db8::/64", ipv6_address_mode="dhcpv6-stateful")
    p = port("p6", "fa:16:3e:00:00:06", "2001:db8::6", sub=SUB6, hostname="vm6")
    text = hosts_file(bundle([subnet(), v6], [p]), DnsmasqSettings())
    assert text == "fa:16:3e:00:00:06,tag:dhcpv6,vm6.openstacklocal,[2001:db8::6]\n"


def test_port_outside_every_subnet_is_skipped_not_fatal() -> None:
    stray = port("p-x", "fa:16:3e:00:00:09", "203.0.113.9")
    unknown = port("p-y", "fa:16:3e:00:00:0a", "192.0.2.10", sub="no-such-subnet")
    found, skipped = allocations(bundle(ports=[VM_PORT, stray, unknown]))
    assert [a.ip for a in found] == ["192.0.2.5"]
    assert {(s.port_id, s.ip) for s in skipped} == {("p-x", "203.0.113.9"), ("p-y", "192.0.2.10")}
    assert "203.0.113.9" not in hosts_file(bundle(ports=[VM_PORT, stray]), DnsmasqSettings())


def opts_for(b: NetworkBundle, policy: MetadataPolicy) -> str:
    settings = DnsmasqSettings(metadata=policy)
    return opts_file(b, settings, dhcp_ips_by_subnet(b, b.dhcp_port()))


def test_force_metadata_routes_via_dhcp_port_even_with_router() -> None:
    for ports in ([DHCP_PORT, VM_PORT], [DHCP_PORT, VM_PORT, ROUTER_PORT]):
        assert opts_for(bundle(ports=ports), FORCE) == (
            f"tag:subnet-{SUB},option:classless-static-route,"
            "169.254.169.254/32,192.0.2.2,0.0.0.0/0,192.0.2.1\n"
            f"tag:subnet-{SUB},249,169.254.169.254/32,192.0.2.2,0.0.0.0/0,192.0.2.1\n"
            f"tag:subnet-{SUB},option:router,192.0.2.1\n"
        )


def test_isolated_metadata_follows_the_router() -> None:
    isolated = opts_for(bundle(), ISOLATED)
    assert "169.254.169.254/32,192.0.2.2" in isolated
    routed = opts_for(bundle(ports=[DHCP_PORT, VM_PORT, ROUTER_PORT]), ISOLATED)
    # A routed subnet gets no metadata host route at all (issue 6): the default route leads
    # into the router's path, and with no host routes no option 121 is sent.
    assert "169.254.169.254" not in routed
    assert routed == f"tag:subnet-{SUB},option:router,192.0.2.1\n"


def test_no_metadata_and_no_routes_sends_only_the_router() -> None:
    assert opts_for(bundle(), MetadataPolicy()) == f"tag:subnet-{SUB},option:router,192.0.2.1\n"


def test_host_routes_other_subnets_dns_and_no_gateway() -> None:
    first = subnet(
        gateway_ip=None,
        host_routes=[
            {"destination": "198.51.100.0/24", "nexthop": "192.0.2.9"},
            {"destination": "0.0.0.0/0", "nexthop": "192.0.2.254"},
        ],
        dns_nameservers=["192.0.2.53", "192.0.2.54"],
    )
    second = subnet(id=SUB2, cidr="203.0.113.0/24", gateway_ip=None, dns_nameservers=["0.0.0.0"])
    text = opts_for(bundle([first, second], [DHCP_PORT]), FORCE)
    assert text.splitlines() == [
        f"tag:subnet-{SUB},option:dns-server,192.0.2.53,192.0.2.54",
        f"tag:subnet-{SUB},option:classless-static-route,203.0.113.0/24,0.0.0.0,"
        "198.51.100.0/24,192.0.2.9,169.254.169.254/32,192.0.2.2,0.0.0.0/0,192.0.2.254",
        f"tag:subnet-{SUB},249,203.0.113.0/24,0.0.0.0,"
        "198.51.100.0/24,192.0.2.9,169.254.169.254/32,192.0.2.2,0.0.0.0/0,192.0.2.254",
        f"tag:subnet-{SUB},option:router,192.0.2.254",
        f"tag:subnet-{SUB2},option:dns-server",
        f"tag:subnet-{SUB2},option:classless-static-route,192.0.2.0/24,0.0.0.0",
        f"tag:subnet-{SUB2},249,192.0.2.0/24,0.0.0.0",
        f"tag:subnet-{SUB2},option:router",
    ]


def test_v6_options() -> None:
    v6 = subnet(id=SUB6, ip_version=6, cidr="2001:db8::/64", dns_nameservers=["2001:db8::53"])
    text = opts_for(bundle([v6], []), MetadataPolicy())
    assert text == (
        f"tag:subnet-{SUB6},option6:dns-server,[2001:db8::53]\n"
        f"tag:subnet-{SUB6},option6:domain-search,openstacklocal\n"
    )


def test_should_enable_metadata_decisions() -> None:
    plain, routed = bundle(), bundle(ports=[DHCP_PORT, ROUTER_PORT])
    assert isolated_subnets(plain) == {SUB: True}
    assert isolated_subnets(routed) == {SUB: False}
    assert should_enable_metadata(plain, FORCE) and should_enable_metadata(routed, FORCE)
    assert should_enable_metadata(plain, ISOLATED)
    assert not should_enable_metadata(routed, ISOLATED)
    assert not should_enable_metadata(plain, MetadataPolicy())
    assert not should_enable_metadata(bundle([subnet(enable_dhcp=False)]), FORCE)


def test_interface_addresses() -> None:
    assert interface_cidrs(bundle(), bundle().dhcp_port(), FORCE) == [
        "192.0.2.2/24",
        "169.254.169.254/32",
    ]
    v6 = subnet(id=SUB6, ip_version=6, cidr="2001:db8::/64")
    dual = port("p-dhcp", "fa:16:3e:00:00:02", "192.0.2.2", "network:dhcp", device_id=f"dhcp-{NET}")
    dual["fixed_ips"].append({"subnet_id": SUB6, "ip_address": "2001:db8::2"})
    b = bundle([subnet(), v6], [dual])
    assert interface_cidrs(b, b.dhcp_port(), ISOLATED) == [
        "192.0.2.2/24",
        "2001:db8::2/64",
        "169.254.169.254/32",
        "fe80::a9fe:a9fe/128",
    ]
    routed = bundle(ports=[DHCP_PORT, ROUTER_PORT])
    assert interface_cidrs(routed, routed.dhcp_port(), ISOLATED) == ["192.0.2.2/24"]


def test_signature_changes_on_subnet_not_on_ports() -> None:
    base = subnet_signature(bundle())
    assert subnet_signature(bundle(ports=[DHCP_PORT, VM_PORT, ROUTER_PORT])) == base
    assert subnet_signature(bundle([subnet(gateway_ip="192.0.2.254")])) != base


def test_bad_bundle_names_the_field() -> None:
    with pytest.raises(BundleError, match="network"):
        NetworkBundle.from_json({"subnets": []})


def test_distributed_metadata_is_on_link_for_every_subnet_and_off_the_dhcp_port() -> None:
    distributed = MetadataPolicy(enable_isolated_metadata=True, distributed=True)
    for ports in ([DHCP_PORT, VM_PORT], [DHCP_PORT, VM_PORT, ROUTER_PORT]):  # isolated, routed
        b = bundle(ports=ports)
        assert opts_for(b, distributed) == (
            f"tag:subnet-{SUB},option:classless-static-route,"
            "169.254.169.254/32,0.0.0.0,0.0.0.0/0,192.0.2.1\n"
            f"tag:subnet-{SUB},249,169.254.169.254/32,0.0.0.0,0.0.0.0/0,192.0.2.1\n"
            f"tag:subnet-{SUB},option:router,192.0.2.1\n"
        )
        # The compute nodes' localports answer 169.254.169.254: no DHCP namespace holds it.
        assert not should_enable_metadata(b, distributed)
        assert interface_cidrs(b, b.dhcp_port(), distributed) == ["192.0.2.2/24"]


def test_dhcp_ports_of_two_agents_are_told_apart_by_host() -> None:
    one, two = dhcp_device_id(NET, "network-1"), dhcp_device_id(NET, "network-2")
    assert one != two and one.startswith("dhcp") and one.endswith(f"-{NET}")
    assert dhcp_device_id(NET) == f"dhcp-{NET}"  # one agent per machine, as before
    theirs = port("p-d2", "fa:16:3e:00:00:03", "192.0.2.3", "network:dhcp", device_id=two)
    b = bundle(ports=[DHCP_PORT, theirs, VM_PORT])
    assert b.dhcp_port("network-2") is not None and b.dhcp_port("network-2").id == "p-d2"
    assert b.dhcp_port("network-1") is None
    assert b.dhcp_port().id == DHCP_PORT["id"]
