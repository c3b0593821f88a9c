"""The router namespace's metadata rules, rendered for ``iptables-restore --noflush``.

Pure: no I/O. The rules are Neutron's (``driver.py`` metadata_filter_rules / metadata_nat_rules
and ``router_info.initialize_metadata_iptables``), placed in chains of our own so that writing
them again replaces them instead of appending copies:

- mangle: mark TCP to 169.254.169.254:80 arriving on a router interface (``0x1/0xffff``);
- nat: redirect the same packets to the router's proxy port (9697 by default);
- filter: accept the proxy port only for marked packets from a router interface, drop the rest.

Each chain is hooked from one built-in chain; the linux package adds that jump once.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "METADATA_CIDR",
    "METADATA_MARK",
    "ROUTER_MARK_MASK",
    "Chain",
    "metadata_chains",
    "redirect_rule",
    "render_restore",
]

METADATA_CIDR = "169.254.169.254/32"
METADATA_HTTP_PORT = 80
METADATA_MARK = "0x1"
ROUTER_MARK_MASK = "0xffff"
# iptables chain names are limited to 28 characters; these fit with any hook name used here.
_CHAIN_PREFIX = "cloudmeta-l3-"


@dataclass(frozen=True, slots=True)
class Chain:
    """One chain of ours: its table, the built-in chain that jumps to it, and its rules."""

    table: str
    hook: str
    rules: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{_CHAIN_PREFIX}{self.hook}"


def redirect_rule(interface_pattern: str, proxy_port: int) -> str:
    """The nat rule sending metadata requests to the proxy (tests read its counters)."""
    return (
        f"-d {METADATA_CIDR} -i {interface_pattern} -p tcp -m tcp --dport {METADATA_HTTP_PORT}"
        f" -j REDIRECT --to-ports {proxy_port}"
    )


def metadata_chains(interface_prefix: str, proxy_port: int) -> tuple[Chain, ...]:
    """The three chains of a router namespace; ``interface_prefix`` is e.g. ``qr-``."""
    if not interface_prefix or any(c.isspace() for c in interface_prefix):
        raise ValueError(f"interface prefix {interface_prefix!r} must be a non-empty word")
    qr = f"{interface_prefix}+"
    mark = f"{METADATA_MARK}/{ROUTER_MARK_MASK}"
    to_metadata = f"-d {METADATA_CIDR} -i {qr} -p tcp -m tcp --dport {METADATA_HTTP_PORT}"
    return (
        Chain("mangle", "PREROUTING", (f"{to_metadata} -j MARK --set-xmark {mark}",)),
        Chain("nat", "PREROUTING", (redirect_rule(qr, proxy_port),)),
        Chain(
            "filter",
            "INPUT",
            (
                f"-i {qr} -p tcp -m tcp --dport {proxy_port} -m mark --mark {mark} -j ACCEPT",
                f"-p tcp -m tcp --dport {proxy_port} -j DROP",
            ),
        ),
    )


def render_restore(chains: tuple[Chain, ...]) -> str:
    """``iptables-restore --noflush`` input that (re)fills our chains, one COMMIT per table.

    Declaring an existing user chain under ``--noflush`` flushes it, so the text is idempotent.
    The jumps from the built-in chains are not in it: appending them would add a copy each time.
    """
    lines: list[str] = []
    tables: dict[str, list[Chain]] = {}
    for chain in chains:
        tables.setdefault(chain.table, []).append(chain)
    for table, members in tables.items():
        lines.append(f"*{table}")
        lines.extend(f":{chain.name} - [0:0]" for chain in members)
        for chain in members:
            lines.extend(f"-A {chain.name} {rule}" for rule in chain.rules)
        lines.append("COMMIT")
    return "\n".join(lines) + "\n"
