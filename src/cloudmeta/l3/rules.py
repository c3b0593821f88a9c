"""The router namespace's metadata rules, as chains of our own for the linux package.

Pure: no I/O. The rules are Neutron's (``driver.py`` metadata_filter_rules / metadata_nat_rules
and ``router_info.initialize_metadata_iptables``), each table's in a chain of ours hooked once
from a built-in chain, so writing them again (``iptables-restore --noflush``) replaces them:

- mangle: mark TCP to 169.254.169.254:80 arriving on a router interface (``0x1/0xffff``);
- nat: redirect the same packets to the router's proxy port (9697 by default);
- filter: accept the proxy port only for marked packets from a router interface, drop the rest.

The same three chains, for ``fe80::a9fe:a9fe/128``, go in ip6tables (``ipv6=True``): the
router's interfaces carry that address (``nodad``) so that an instance's neighbour
solicitation for it is answered, and the redirect sends it to the proxy's ``[::]`` listener.
"""

from __future__ import annotations

from cloudmeta.linux.iptables import Chain

__all__ = [
    "METADATA_CIDR",
    "METADATA_MARK",
    "METADATA_V6_CIDR",
    "NAT_CHAIN",
    "ROUTER_MARK_MASK",
    "metadata_chains",
    "redirect_rule",
]

METADATA_CIDR = "169.254.169.254/32"
METADATA_V6_CIDR = "fe80::a9fe:a9fe/128"
METADATA_HTTP_PORT = 80
METADATA_MARK = "0x1"
ROUTER_MARK_MASK = "0xffff"
MANGLE_CHAIN = "cloudmeta-l3-mark"
NAT_CHAIN = "cloudmeta-l3-redirect"
FILTER_CHAIN = "cloudmeta-l3-input"


def redirect_rule(interface_pattern: str, proxy_port: int, *, ipv6: bool = False) -> str:
    """The nat rule sending metadata requests to the proxy (tests read its counters)."""
    cidr = METADATA_V6_CIDR if ipv6 else METADATA_CIDR
    return (
        f"-d {cidr} -i {interface_pattern} -p tcp -m tcp --dport {METADATA_HTTP_PORT}"
        f" -j REDIRECT --to-ports {proxy_port}"
    )


def metadata_chains(
    interface_prefix: str, proxy_port: int, *, ipv6: bool = False
) -> tuple[Chain, ...]:
    """The three chains of a router namespace; ``interface_prefix`` is e.g. ``qr-``;
    ``ipv6`` gives the ip6tables ones (``fe80::a9fe:a9fe``)."""
    if not interface_prefix or any(c.isspace() for c in interface_prefix):
        raise ValueError(f"interface prefix {interface_prefix!r} must be a non-empty word")
    qr = f"{interface_prefix}+"
    mark = f"{METADATA_MARK}/{ROUTER_MARK_MASK}"
    cidr = METADATA_V6_CIDR if ipv6 else METADATA_CIDR
    to_metadata = f"-d {cidr} -i {qr} -p tcp -m tcp --dport {METADATA_HTTP_PORT}"
    return (
        Chain(
            "mangle",
            MANGLE_CHAIN,
            (f"{to_metadata} -j MARK --set-xmark {mark}",),
            jump_from="PREROUTING",
        ),
        Chain(
            "nat", NAT_CHAIN, (redirect_rule(qr, proxy_port, ipv6=ipv6),), jump_from="PREROUTING"
        ),
        Chain(
            "filter",
            FILTER_CHAIN,
            (
                f"-i {qr} -p tcp -m tcp --dport {proxy_port} -m mark --mark {mark} -j ACCEPT",
                f"-p tcp -m tcp --dport {proxy_port} -j DROP",
            ),
            jump_from="INPUT",
        ),
    )
