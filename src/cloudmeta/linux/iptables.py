"""iptables inside a namespace: our own chains, written idempotently with ``iptables-restore``.

A ruleset is a list of ``Chain``: each is created (or flushed) and refilled in one
``iptables-restore --noflush`` transaction, and a jump to it from a built-in chain is inserted
once. Nothing else in the namespace is touched, and the host's tables never are (every command
runs in the namespace). The nft flavour works per namespace here; the legacy one is the fallback.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.execute import run

__all__ = [
    "Chain",
    "RuleCounter",
    "apply_iptables",
    "iptables_counters",
    "parse_counters",
    "remove_iptables",
    "render_apply",
    "render_remove",
]

_MAX_CHAIN = 28
_COUNTED = re.compile(r"^\[(\d+):(\d+)\] (-A \S+ .*)$")
_locks: dict[tuple[str, bool], asyncio.Lock] = {}


@dataclass(frozen=True, slots=True)
class Chain:
    """One chain of ours: ``rules`` are iptables-save specs without the ``-A <chain>`` part."""

    table: str  # "filter", "nat", "mangle", "raw"
    name: str
    rules: tuple[str, ...] = ()
    jump_from: str | None = None  # built-in chain ("PREROUTING") that jumps here, added once

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > _MAX_CHAIN or " " in self.name:
            raise LinuxError(f"iptables chain name {self.name!r}: 1..{_MAX_CHAIN} chars, no spaces")


@dataclass(frozen=True, slots=True)
class RuleCounter:
    packets: int
    bytes: int
    rule: str  # as iptables-save prints it: "-A CHAIN -d 169.254.169.254/32 ... -j REDIRECT ..."


def _select_table(saved: str, table: str) -> list[str]:
    """The raw lines of ``table`` in iptables-save output."""
    lines, inside = [], False
    for raw in saved.splitlines():
        if raw.startswith("*"):
            inside = raw[1:] == table
        elif inside and raw != "COMMIT":
            lines.append(raw)
    return lines


def _table_lines(saved: str, table: str) -> list[str]:
    """The lines of ``table`` in iptables-save output, counters stripped."""
    return [
        (m.group(3) if (m := _COUNTED.match(raw)) else raw) for raw in _select_table(saved, table)
    ]


def _group(chains: Sequence[Chain]) -> dict[str, list[Chain]]:
    tables: dict[str, list[Chain]] = {}
    seen: set[tuple[str, str]] = set()
    for chain in chains:
        if (chain.table, chain.name) in seen:
            raise LinuxError(f"chain {chain.table}/{chain.name} given twice")
        seen.add((chain.table, chain.name))
        tables.setdefault(chain.table, []).append(chain)
    return tables


def render_apply(chains: Sequence[Chain], saved: str) -> str:
    """iptables-restore --noflush input that makes ``chains`` exactly so, given the current save."""
    out: list[str] = []
    for table, members in _group(chains).items():
        existing = set(_table_lines(saved, table))
        out.append(f"*{table}")
        out += [f":{c.name} - [0:0]" for c in members]
        for chain in members:
            out += [f"-A {chain.name} {rule}" for rule in chain.rules]
        for chain in members:
            if chain.jump_from and f"-A {chain.jump_from} -j {chain.name}" not in existing:
                out.append(f"-I {chain.jump_from} 1 -j {chain.name}")
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def render_remove(chains: Sequence[Chain], saved: str) -> str:
    """iptables-restore --noflush input that removes ``chains`` and every jump to them."""
    out: list[str] = []
    for table, members in _group(chains).items():
        lines = _table_lines(saved, table)
        present = [c for c in members if any(ln.startswith(f":{c.name} ") for ln in lines)]
        if not present:
            continue
        names = {c.name for c in present}
        out.append(f"*{table}")
        for line in lines:
            parts = line.split()
            if parts[:1] == ["-A"] and parts[1] not in names and _jumps_to(parts) & names:
                out.append("-D " + line[3:])
        out += [f":{c.name} - [0:0]" for c in present]
        out += [f"-X {c.name}" for c in present]
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def _jumps_to(parts: list[str]) -> set[str]:
    return {parts[i + 1] for i, p in enumerate(parts[:-1]) if p in ("-j", "-g")}


def parse_counters(saved: str, chain: str) -> list[RuleCounter]:
    """Counters of the rules of ``chain`` from ``iptables-save -c`` output, in rule order."""
    result = []
    for raw in saved.splitlines():
        match = _COUNTED.match(raw)
        if match and match.group(3).split()[1] == chain:
            result.append(RuleCounter(int(match.group(1)), int(match.group(2)), match.group(3)))
    return result


def _tool(ipv6: bool, action: str) -> list[str]:
    """``iptables-nft-restore`` when installed (per-namespace nft tables), else legacy with -w."""
    base = "ip6tables" if ipv6 else "iptables"
    if shutil.which(f"{base}-nft-{action}"):
        return [f"{base}-nft-{action}"]
    if shutil.which(f"{base}-legacy-{action}"):
        return (
            [f"{base}-legacy-{action}", "-w"]
            if action == "restore"
            else [f"{base}-legacy-{action}"]
        )
    return [f"{base}-{action}"]


def _lock(namespace: str, ipv6: bool) -> asyncio.Lock:
    return _locks.setdefault((namespace, ipv6), asyncio.Lock())


async def _save(namespace: str, ipv6: bool, *, counters: bool = False) -> str:
    cmd = _tool(ipv6, "save") + (["-c"] if counters else [])
    return (await run(cmd, namespace=namespace)).stdout


async def _restore(namespace: str, ipv6: bool, text: str) -> None:
    if text:
        await run([*_tool(ipv6, "restore"), "--noflush"], namespace=namespace, input=text.encode())


async def apply_iptables(namespace: str, chains: Sequence[Chain], *, ipv6: bool = False) -> None:
    """Create or refill our ``chains`` in ``namespace`` (idempotent, one transaction)."""
    async with _lock(namespace, ipv6):
        await _restore(namespace, ipv6, render_apply(chains, await _save(namespace, ipv6)))


async def remove_iptables(namespace: str, chains: Sequence[Chain], *, ipv6: bool = False) -> None:
    """Remove our ``chains`` and the jumps to them (idempotent; only ``table``/``name`` matter)."""
    async with _lock(namespace, ipv6):
        await _restore(namespace, ipv6, render_remove(chains, await _save(namespace, ipv6)))


async def iptables_counters(
    namespace: str, table: str, chain: str, *, ipv6: bool = False
) -> list[RuleCounter]:
    """Packet and byte counters of the rules of ``chain`` in ``table``, in rule order."""
    saved = await _save(namespace, ipv6, counters=True)
    return parse_counters("\n".join(_select_table(saved, table)), chain)
