"""Golden tests of dnsmasq for IPv6 subnets: Neutron's ranges, and the RAs of ``ipv6_ra_mode``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cloudmeta.dhcp.decisions import MetadataPolicy, dhcp_ips_by_subnet
from cloudmeta.dhcp.model import NetworkBundle
from cloudmeta.dhcp.render import (
    DnsmasqFiles,
    DnsmasqSettings,
    addn_hosts_file,
    cmdline,
    hosts_file,
    opts_file,
    range_mode,
)

NET = "5e1d4c3b-0000-4000-8000-0000000000b1"
S4, SL, SF, SS = (f"5e1d4c3b-0000-4000-8000-0000000000c{n}" for n in "4abc")
MAC = "fa:16:3e:00:00:05"


def v6(sid: str, cidr: str, mode: str | None, ra: str | None, **over: Any) -> dict[str, Any]:
    data = {
        "id": sid,
        "network_id": NET,
        "ip_version": 6,
        "cidr": cidr,
        "gateway_ip": cidr.replace("::/64", "::1"),
        "enable_dhcp": True,
        "ipv6_address_mode": mode,
        "ipv6_ra_mode": ra,
    }
    data.update(over)
    return data


V4 = {"id": S4, "network_id": NET, "ip_version": 4, "cidr": "192.0.2.0/24", "enable_dhcp": True}
SLAAC = v6(SL, "2001:db8:1::/64", "slaac", "slaac")
STATEFUL = v6(SF, "2001:db8:2::/64", "dhcpv6-stateful", "dhcpv6-stateful")
STATELESS = v6(SS, "2001:db8:3::/64", "dhcpv6-stateless", "dhcpv6-stateless")


def bundle(subnets: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None):
    return NetworkBundle.from_json(
        {"network": {"id": NET, "mtu": 1500}, "subnets": subnets, "ports": ports or []}
    )


def vm_port(*fixed: tuple[str, str]) -> dict[str, Any]:
    return {
        "id": "p-vm",
        "network_id": NET,
        "mac_address": MAC,
        "fixed_ips": [{"subnet_id": s, "ip_address": ip} for s, ip in fixed],
        "device_owner": "compute:nova",
        "hostname": "vm",
    }


def ranges(cmd: list[str]) -> list[str]:
    return [a for a in cmd if a.startswith(("--dhcp-range", "--enable-ra", "--ra-param"))]


def test_ra_modes_render_dnsmasqs_ra_flags(tmp_path: Path) -> None:
    cmd = cmdline(
        bundle([V4, SLAAC, STATEFUL, STATELESS]), DnsmasqFiles(tmp_path), "ns-1", DnsmasqSettings()
    )
    assert ranges(cmd) == [
        f"--dhcp-range=set:subnet-{S4},192.0.2.0,static,255.255.255.0,86400s",
        f"--dhcp-range=set:subnet-{SL},2001:db8:1::,ra-only,64,86400s",
        f"--dhcp-range=set:subnet-{SF},2001:db8:2::,static,64,86400s",
        f"--dhcp-range=set:subnet-{SS},2001:db8:3::,ra-stateless,64,86400s",
        "--enable-ra",
        "--ra-param=ns-1,10,0",  # the DHCP port is no router: lifetime 0, no default route
    ]
    # The RA options come before --dhcp-lease-max etc., ranges keep Neutron's place.
    assert cmd.index("--enable-ra") < cmd.index("--conf-file=/dev/null")


def test_without_ra_mode_it_is_neutrons_rendering(tmp_path: Path) -> None:
    """RAs from a router outside (``ipv6_ra_mode`` unset): no --enable-ra; SLAAC gets no
    range, DHCPv6 (stateful, stateless, or no mode at all) ``static``, as Neutron renders."""
    subnets = [
        v6(SL, "2001:db8:1::/64", "slaac", None),
        v6(SF, "2001:db8:2::/64", "dhcpv6-stateful", None),
        v6(SS, "2001:db8:3::/64", "dhcpv6-stateless", None),
        v6(S4, "2001:db8:4::/64", None, None),
    ]
    cmd = cmdline(bundle(subnets), DnsmasqFiles(tmp_path), "ns-1", DnsmasqSettings())
    assert ranges(cmd) == [
        f"--dhcp-range=set:subnet-{SF},2001:db8:2::,static,64,86400s",
        f"--dhcp-range=set:subnet-{SS},2001:db8:3::,static,64,86400s",
        f"--dhcp-range=set:subnet-{S4},2001:db8:4::,static,64,86400s",
    ]
    assert [range_mode(NetworkBundle.from_json({"network": {"id": NET}, "subnets": [s]}).subnets[0])
            for s in subnets] == [None, "static", "static", "static"]  # fmt: skip


def test_a_slaac_only_network_is_still_served() -> None:
    """An IPv6-only SLAAC network has a DHCP subnet (the agent serves it: DHCP port, RAs, the
    metadata address), though dnsmasq hands out no address on it."""
    b = bundle([SLAAC])
    assert [s.id for s in b.dhcp_subnets] == [SL]


def test_hosts_file_lists_only_stateful_addresses() -> None:
    port = vm_port(
        (S4, "192.0.2.5"),
        (SL, "2001:db8:1:0:f816:3eff:fe00:5"),
        (SF, "2001:db8:2::5"),
        (SS, "2001:db8:3:0:f816:3eff:fe00:5"),
    )
    b = bundle([V4, SLAAC, STATEFUL, STATELESS], [port])
    assert hosts_file(b, DnsmasqSettings()) == (
        f"{MAC},vm.openstacklocal,192.0.2.5\n{MAC},tag:dhcpv6,vm.openstacklocal,[2001:db8:2::5]\n"
    )
    # Every address has its name for DNS, SLAAC ones too (Neutron's addn_hosts).
    assert addn_hosts_file(b, DnsmasqSettings()).count("vm.openstacklocal vm") == 4


def test_options_skip_slaac_and_serve_dhcpv6_subnets() -> None:
    dns = {"dns_nameservers": ["2001:db8::53"]}
    subnets = [
        v6(SL, "2001:db8:1::/64", "slaac", "slaac", **dns),
        v6(SF, "2001:db8:2::/64", "dhcpv6-stateful", "dhcpv6-stateful", **dns),
        v6(SS, "2001:db8:3::/64", "dhcpv6-stateless", "dhcpv6-stateless", **dns),
    ]
    b = bundle(subnets)
    text = opts_file(b, DnsmasqSettings(metadata=MetadataPolicy()), dhcp_ips_by_subnet(b, None))
    assert text.splitlines() == [
        f"tag:subnet-{SF},option6:dns-server,[2001:db8::53]",
        f"tag:subnet-{SF},option6:domain-search,openstacklocal",
        f"tag:subnet-{SS},option6:dns-server,[2001:db8::53]",
        f"tag:subnet-{SS},option6:domain-search,openstacklocal",
    ]
