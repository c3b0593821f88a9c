"""dnsmasq's command line and files for one network, rendered from plain data (CONTRACTS §4a-4d).

Nothing here touches the system: the driver writes what these functions return.

Where MTU and domain go: issue 5 lists them with the opts file's options, but Neutron
(CONTRACTS §4a) puts both on the command line, and its opts file (§4d) has neither; we keep
Neutron's forms. ``--dhcp-option-force=option:mtu,<mtu>`` is per network, not per subnet, and
is forced so clients that do not ask still get it; ``--domain=<dns_domain>`` is also the
domain dnsmasq sends as option 15 (domain-name) and uses for its DNS. Like the dhcp-ranges
they take effect when dnsmasq (re)starts, not on SIGHUP, which re-reads only files. Adding
``option:domain-name`` to the opts file too would send the same value twice over two routes
for no client's benefit. The DHCP tests check that a real dhclient's lease carries both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cloudmeta.config import Config
from cloudmeta.dhcp.decisions import MetadataPolicy, subnet_routes
from cloudmeta.dhcp.model import NetworkBundle, Port, Subnet

__all__ = [
    "DNSMASQ_BINARY",
    "LEASE_MAX",
    "RA_INTERVAL",
    "DnsmasqFiles",
    "DnsmasqSettings",
    "SkippedIp",
    "addn_hosts_file",
    "allocations",
    "cmdline",
    "hosts_file",
    "opts_file",
    "range_mode",
]

DNSMASQ_BINARY = "/usr/sbin/dnsmasq"
LEASE_MAX = 2**24
_ANY = frozenset({"0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class DnsmasqFiles:
    """The per-network directory ``<state_path>/dhcp/<network_id>/`` and its files."""

    root: Path

    @property
    def host(self) -> Path:
        return self.root / "host"

    @property
    def addn_hosts(self) -> Path:
        return self.root / "addn_hosts"

    @property
    def opts(self) -> Path:
        return self.root / "opts"

    @property
    def leases(self) -> Path:
        return self.root / "leases"

    @property
    def pid(self) -> Path:
        return self.root / "pid"

    @property
    def interface(self) -> Path:
        return self.root / "interface"


@dataclass(frozen=True, slots=True)
class DnsmasqSettings:
    """The agent options that shape dnsmasq (Neutron's names and defaults)."""

    lease_duration: int = 86400
    dns_servers: tuple[str, ...] = ()
    dns_domain: str = "openstacklocal"
    metadata: MetadataPolicy = field(default_factory=MetadataPolicy)

    @classmethod
    def from_config(cls, config: Config) -> DnsmasqSettings:
        return cls(
            lease_duration=config.dhcp_lease_duration,
            dns_servers=tuple(config.dnsmasq_dns_servers),
            dns_domain=config.dns_domain,
            metadata=MetadataPolicy.of(config),
        )


@dataclass(frozen=True, slots=True)
class Allocation:
    port: Port
    subnet: Subnet
    ip: str

    @property
    def hostname(self) -> str:
        if self.port.hostname:
            return self.port.hostname
        return "host-" + self.ip.replace(".", "-").replace(":", "-")

    def fqdn(self, domain: str) -> str:
        name = self.hostname
        return f"{name}.{domain}" if domain and "." not in name else name


@dataclass(frozen=True, slots=True)
class SkippedIp:
    """A fixed IP left out of the hosts file, with the reason to log."""

    port_id: str
    ip: str
    reason: str


def allocations(bundle: NetworkBundle) -> tuple[list[Allocation], list[SkippedIp]]:
    """Every (port, DHCP subnet, IP) to serve, and the fixed IPs that cannot be served."""
    subnets = {s.id: s for s in bundle.subnets}
    found: list[Allocation] = []
    skipped: list[SkippedIp] = []
    for port in bundle.ports:
        for fixed in port.fixed_ips:
            subnet = subnets.get(fixed.subnet_id)
            try:
                addr = ipaddress.ip_address(fixed.ip_address)
            except ValueError:
                skipped.append(SkippedIp(port.id, fixed.ip_address, "not an IP address"))
                continue
            if subnet is None or addr not in subnet.network:
                skipped.append(SkippedIp(port.id, fixed.ip_address, "outside every subnet"))
            elif subnet.serves_dhcp:
                found.append(Allocation(port, subnet, fixed.ip_address))
    return found, skipped


# dnsmasq's mode word for a v6 range when the cloud sends the RAs (``ipv6_ra_mode`` set):
# the RA's flags follow the mode (A: SLAAC; O: ask DHCPv6 for options; M: ask it for addresses).
_RA_RANGE_MODES = {
    "slaac": "ra-only",  # RA with A, no DHCPv6 at all
    "dhcpv6-stateless": "ra-stateless",  # RA with A and O, DHCPv6 answers options only
    "dhcpv6-stateful": "static",  # RA with M and O, DHCPv6 hands out the hosts file's addresses
}
# The DHCP port is not a router: its RAs carry prefixes and flags, never a default route
# (router lifetime 0). An interval of 10 s instead of 600 s lets an instance that missed the
# answer to its solicitation get its address soon, at one small packet per 10 s per network.
RA_INTERVAL = 10


def range_mode(subnet: Subnet) -> str | None:
    """The mode word of the subnet's ``--dhcp-range`` (None: no range at all).

    IPv4 is ``static``. IPv6 without ``ipv6_ra_mode`` renders as Neutron: ``static`` for
    DHCPv6 (stateful or stateless) or no mode at all, nothing for SLAAC (another router sends
    the RAs). With ``ipv6_ra_mode`` dnsmasq sends the RAs itself (``--enable-ra``), with the
    flags of that mode.
    """
    if subnet.ip_version == 4:
        return "static"
    if subnet.ipv6_ra_mode is not None:
        return _RA_RANGE_MODES.get(subnet.ipv6_ra_mode)
    if subnet.ipv6_address_mode in (None, "dhcpv6-stateful", "dhcpv6-stateless"):
        return "static"
    return None


def _range(subnet: Subnet, mode: str, lease: str) -> str:
    net = subnet.network
    mask = str(net.netmask) if net.version == 4 else str(net.prefixlen)
    return f"--dhcp-range=set:subnet-{subnet.id},{net.network_address},{mode},{mask},{lease}"


def cmdline(
    bundle: NetworkBundle, files: DnsmasqFiles, interface: str, settings: DnsmasqSettings
) -> list[str]:
    """Neutron's dnsmasq argument list, bound to the DHCP interface, DNS off unless configured."""
    lease = "infinite" if settings.lease_duration == -1 else f"{settings.lease_duration}s"
    cmd = [
        DNSMASQ_BINARY,
        "--no-hosts",
        "--no-resolv",
        f"--pid-file={files.pid}",
        f"--dhcp-hostsfile={files.host}",
        f"--addn-hosts={files.addn_hosts}",
        f"--dhcp-optsfile={files.opts}",
        f"--dhcp-leasefile={files.leases}",
        "--dhcp-match=set:ipxe,175",
        "--dhcp-userclass=set:ipxe6,iPXE",
        f"--interface={interface}",
        "--bind-dynamic",
    ]
    size = 0
    advertise = False
    for subnet in bundle.dhcp_subnets:
        mode = range_mode(subnet)
        if mode is None or (subnet.ip_version == 6 and subnet.network.prefixlen < 64):
            continue
        cmd.append(_range(subnet, mode, lease))
        size += subnet.network.num_addresses
        advertise = advertise or subnet.ipv6_ra_mode is not None
    if advertise:
        cmd += ["--enable-ra", f"--ra-param={interface},{RA_INTERVAL},0"]
    if bundle.network.mtu > 0:
        cmd.append(f"--dhcp-option-force=option:mtu,{bundle.network.mtu}")
    cmd.append(f"--dhcp-lease-max={min(size, LEASE_MAX)}")
    cmd.append("--conf-file=/dev/null")
    if settings.dns_servers:
        cmd.extend(f"--server={server}" for server in settings.dns_servers)
    else:
        cmd.append("--port=0")
    if settings.dns_domain:
        cmd.append(f"--domain={settings.dns_domain}")
    return cmd


def _host_ip(ip: str) -> str:
    return f"[{ip}]" if ":" in ip else ip


def hosts_file(bundle: NetworkBundle, settings: DnsmasqSettings) -> str:
    """``--dhcp-hostsfile``: ``<mac>,<fqdn>,<ip>`` per served address (v6 tagged and bracketed).

    A SLAAC or DHCPv6-stateless address is the instance's own EUI-64: nothing to hand out."""
    lines = []
    for alloc in allocations(bundle)[0]:
        tag = "tag:dhcpv6," if alloc.subnet.ip_version == 6 else ""
        if alloc.subnet.ip_version == 6 and not alloc.subnet.dhcpv6_stateful:
            continue
        fqdn = alloc.fqdn(settings.dns_domain)
        lines.append(f"{alloc.port.mac_address},{tag}{fqdn},{_host_ip(alloc.ip)}")
    return "".join(line + "\n" for line in lines)


def addn_hosts_file(bundle: NetworkBundle, settings: DnsmasqSettings) -> str:
    """``--addn-hosts``: ``<ip>\\t<fqdn> <hostname>`` (fqdn first, for PTR answers)."""
    lines = [f"{a.ip}\t{a.fqdn(settings.dns_domain)} {a.hostname}" for a in allocations(bundle)[0]]
    return "".join(line + "\n" for line in lines)


def _option(subnet: Subnet, name: str, values: list[str] | None = None) -> str:
    prefix = "option6:" if subnet.ip_version == 6 else ("" if name.isdigit() else "option:")
    text = f"tag:subnet-{subnet.id},{prefix}{name}"
    return text + "".join(f",{v}" for v in values or ())


def opts_file(bundle: NetworkBundle, settings: DnsmasqSettings, dhcp_ips: Mapping[str, str]) -> str:
    """``--dhcp-optsfile``: DNS, routes (options 121 and 249) and router per DHCP subnet."""
    lines: list[str] = []
    for subnet in bundle.dhcp_subnets:
        if subnet.address_mode == "slaac":
            continue  # no DHCPv6 client asks (Neutron's rule)
        if subnet.dns_nameservers:
            servers = list(subnet.dns_nameservers)
            if set(servers) <= _ANY:
                lines.append(_option(subnet, "dns-server"))
            else:
                lines.append(_option(subnet, "dns-server", [_host_ip(s) for s in servers]))
        if subnet.ip_version == 6:
            if settings.dns_domain:
                lines.append(_option(subnet, "domain-search", [settings.dns_domain]))
            continue
        routes = subnet_routes(subnet, bundle, settings.metadata, dhcp_ips)
        if routes:
            lines.append(_option(subnet, "classless-static-route", routes))
            lines.append(_option(subnet, "249", routes))
        gateway = subnet.gateway_ip or _default_nexthop(subnet)
        lines.append(_option(subnet, "router", [gateway] if gateway else None))
    return "".join(line + "\n" for line in lines)


def _default_nexthop(subnet: Subnet) -> str | None:
    for route in subnet.host_routes:
        if ipaddress.ip_network(route.destination, strict=False).prefixlen == 0:
            return route.nexthop
    return None
