"""Port security (Neutron's anti-spoofing): what each instance port may send onto its bridge.

Pure: ports in, an ``ebtables-restore`` document for the ``nat`` table out. The rules sit in
``PREROUTING``, before the bridge learns a source MAC, so a frame with a forged MAC neither
reaches anyone nor poisons the bridge's forwarding table (a filter in ``FORWARD`` would let the
attacker's port learn the victim's MAC and receive the victim's answers).

Per filtered port, frames entering from its bridge port (``tap`` + port id) must carry the
port's MAC as source and:
* ARP: sender MAC = the port's MAC, sender IP in its fixed IPs (or 0.0.0.0, an RFC 5227 probe);
* IPv4: source in its fixed IPs, or 0.0.0.0 for DHCP (UDP 68 -> 67);
* IPv6: source in its fixed IPv6 IPs, any ``fe80::/64`` address (EUI-64, stable-privacy,
  temporary or static: the metadata path identifies the caller by its enforced MAC, not by its
  link-local address), or :: (DAD, MLD).
Everything else from that port is dropped. Ports of the network itself (``network:*``: DHCP,
router interfaces) are trusted, as in Neutron.

Neighbour discovery (:func:`nd_guard_chains`, ip6tables in the same namespace, which sees
bridged frames through br_netfilter): since any link-local source is admitted, the link-layer
address a port announces must be its own, or the metadata namespaces' neighbour entries (which
steer the answers, and name the caller in haproxy mode) could point a neighbour's address at
the attacker. A solicitation or advertisement from a port carries no option, or its own MAC
as the first option (the kernel takes the first); router advertisements and redirects from
instance ports are dropped.

Where the guard runs decides what it costs: br_netfilter runs ``FORWARD`` once per port a frame
is delivered to, so a multicast (MLD report, DAD, router solicitation) flooded to a network of
200 ports walked the rules of every port 200 times; a boot storm of 1 000 instances spent most
of both cores there (``nft_do_chain``), in softirq. The guard runs in ``raw PREROUTING``
instead, once per frame as it enters the bridge and before it is flooded (a dropped frame
reaches nobody), and only neighbour discovery (ICMPv6 types 133-137) goes past its first rules
to the ports' rules.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cloudmeta.dhcp.model import NetworkBundle, Port
from cloudmeta.linux.iptables import Chain
from cloudmeta.linux.names import link_name

__all__ = [
    "OLD_ND_CHAIN",
    "PortFilter",
    "eui64_link_local",
    "nd_guard_chains",
    "port_filters",
    "render_ruleset",
]

ND_CHAIN = "cloudmeta-nd"  # raw PREROUTING: neighbour discovery goes on to ND_PORTS_CHAIN
ND_PORTS_CHAIN = "cloudmeta-nd-ports"  # the filtered ports' rules
# Where the guard was before (filter FORWARD, once per delivered copy): removed on upgrade.
OLD_ND_CHAIN = ("filter", "cloudmeta-nd")
_ND_TYPES = (133, 134, 135, 136, 137)  # RS, RA, NS, NA, redirect
# ICMPv6 type -> (offset of the options from the IPv6 header, the link-layer option's type)
_ND_OPTIONS = {133: (48, 1), 135: (64, 1), 136: (64, 2)}
_ND_DROPPED = (134, 137)  # router advertisement, redirect: never from an instance
_ICMPV6_NEXT = "4&0xff00=0x3a00"  # no extension header before ICMPv6

TRUSTED_OWNER_PREFIX = "network:"
CHAIN_PREFIX = "cm-"
LINK_LOCAL = "fe80::/64"


@dataclass(frozen=True, slots=True)
class PortFilter:
    """What one bridge port may send."""

    link: str  # the bridge-side end of the port's veth
    mac: str
    ips: tuple[str, ...]

    @property
    def chain(self) -> str:
        return CHAIN_PREFIX + self.link


def eui64_link_local(mac: str) -> str:
    """The fe80:: address the kernel derives from ``mac`` (RFC 4291 appendix A)."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 0xFF, 0xFE, *octets[3:]]
    return str(ipaddress.IPv6Address(bytes([0xFE, 0x80, *([0] * 6), *eui])))


def port_filters(bundle: NetworkBundle, device_prefix: str) -> list[PortFilter]:
    """One filter per untrusted port of the network, sorted by link name."""
    return sorted(
        (_filter(port, device_prefix) for port in bundle.ports if _filtered(port)),
        key=lambda f: f.link,
    )


def _filtered(port: Port) -> bool:
    return bool(port.mac_address) and not port.device_owner.startswith(TRUSTED_OWNER_PREFIX)


def _filter(port: Port, device_prefix: str) -> PortFilter:
    return PortFilter(
        link=link_name(device_prefix, "tap", port.id),
        mac=port.mac_address.lower(),
        ips=tuple(sorted({f.ip_address for f in port.fixed_ips}, key=_ip_key)),
    )


def _ip_key(ip: str) -> tuple[int, int]:
    address = ipaddress.ip_address(ip)
    return address.version, int(address)


def _port_rules(f: PortFilter) -> list[str]:
    head = f"-A {f.chain} -s {f.mac}"
    v4 = [ip for ip in f.ips if ipaddress.ip_address(ip).version == 4]
    v6 = [ip for ip in f.ips if ipaddress.ip_address(ip).version == 6]
    rules = [
        f"{head} -p ARP --arp-mac-src {f.mac} --arp-ip-src {ip} -j ACCEPT"
        for ip in [*v4, "0.0.0.0"]
    ]
    rules += [f"{head} -p IPv4 --ip-src {ip} -j ACCEPT" for ip in v4]
    rules.append(
        f"{head} -p IPv4 --ip-src 0.0.0.0 --ip-proto udp --ip-sport 68 --ip-dport 67 -j ACCEPT"
    )
    rules += [f"{head} -p IPv6 --ip6-src {ip}/128 -j ACCEPT" for ip in [*v6, "::"]]
    rules.append(f"{head} -p IPv6 --ip6-src {LINK_LOCAL} -j ACCEPT")
    rules.append(f"-A {f.chain} -j DROP")
    return rules


def render_ruleset(filters: Iterable[PortFilter]) -> str:
    """The whole ``nat`` table of the bridge namespace (applied atomically, replacing it)."""
    ordered = sorted(filters, key=lambda f: f.link)
    lines = ["*nat", ":PREROUTING ACCEPT", ":OUTPUT ACCEPT", ":POSTROUTING ACCEPT"]
    lines += [f":{f.chain} RETURN" for f in ordered]  # ebtables-nft ignores a chain policy
    lines += [f"-A PREROUTING -i {f.link} -j {f.chain}" for f in ordered]
    for f in ordered:
        lines += _port_rules(f)
    return "\n".join(lines) + "\n"


def _nd_rules(f: PortFilter) -> list[str]:
    head = f"-m physdev --physdev-in {f.link} -p ipv6-icmp -m icmp6 --icmpv6-type"
    raw = f.mac.replace(":", "")
    rules = []
    for kind, (offset, option) in _ND_OPTIONS.items():
        bare = offset - 40  # the message without options
        rules.append(f'{head} {kind} -m u32 --u32 "4>>16={bare:#x}&&{_ICMPV6_NEXT}" -j RETURN')
        own = (
            f"{_ICMPV6_NEXT}&&{offset}>>16={option << 8 | 1:#x}"
            f"&&{offset}&0xffff=0x{raw[:4]}&&{offset + 4}=0x{raw[4:]}"
        )
        rules.append(f'{head} {kind} -m u32 --u32 "{own}" -j RETURN')
    rules += [f"{head} {kind} -j DROP" for kind in (*_ND_OPTIONS, *_ND_DROPPED)]
    return rules


def nd_guard_chains(filters: Iterable[PortFilter]) -> tuple[Chain, ...]:
    """The ip6tables chains checking every filtered port's neighbour discovery: bridged
    frames reach the bridge namespace's ``raw PREROUTING`` once each, as they enter."""
    rules = [rule for f in sorted(filters, key=lambda f: f.link) for rule in _nd_rules(f)]
    gate = tuple(f"-p ipv6-icmp -m icmp6 --icmpv6-type {t} -j {ND_PORTS_CHAIN}" for t in _ND_TYPES)
    return (
        Chain("raw", ND_PORTS_CHAIN, tuple(rules)),
        Chain("raw", ND_CHAIN, gate, jump_from="PREROUTING"),
    )
