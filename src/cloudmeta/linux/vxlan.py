"""VXLAN devices on a bridge, with head-end replication to known peers (no multicast).

Neutron's linuxbridge agent does the same per network: a ``vxlan-<vni>`` device on the
network's bridge, ``local`` its underlay address, and one all-zeros FDB entry per peer VTEP
(``bridge fdb append 00:00:00:00:00:00 dev vxlanX dst <peer>``), so broadcasts (ARP, DHCP) are
copied to every peer and unicast frames go where the device learnt the MAC. Everything runs in
the caller's namespace; nothing touches the host.
"""

from __future__ import annotations

import socket
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from cloudmeta.linux._loop import plain_loop
from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.ip import _check_name, _index, _ipr, _where

__all__ = ["VXLAN_OVERHEAD", "VXLAN_PORT", "create_vxlan", "flood_peers", "set_flood_peers"]

VXLAN_PORT = 4789  # IANA's; Linux defaults to 8472 unless told
VXLAN_OVERHEAD = 50  # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8
_FLOOD = "00:00:00:00:00:00"
_EEXIST, _ENOENT = 17, 2
_NUD_PERMANENT = 0x80
_NTF_SELF = 0x02


@plain_loop
async def create_vxlan(
    namespace: str | None,
    name: str,
    *,
    vni: int,
    local: str,
    bridge: str,
    mtu: int | None = None,
) -> None:
    """VXLAN ``name`` (VNI ``vni``, source ``local``, UDP 4789, learning) on ``bridge``, up;
    idempotent (an existing device of that name is kept)."""
    _check_name(name)
    if not 0 < vni < 2**24:
        raise LinuxError(f"VNI {vni} out of range 1..{2**24 - 1}")
    async with _ipr(namespace) as ipr:
        if not await ipr.link_lookup(ifname=name):
            try:
                await ipr.link(
                    "add",
                    ifname=name,
                    kind="vxlan",
                    vxlan_id=vni,
                    vxlan_local=local,
                    vxlan_port=VXLAN_PORT,
                    vxlan_learning=1,
                )
            except NetlinkError as exc:
                if exc.code != _EEXIST:
                    raise LinuxError(
                        f"cannot create vxlan {name} (VNI {vni}) in {_where(namespace)}: {exc}"
                    ) from exc
        index = await _index(ipr, namespace, name)
        settings: dict[str, Any] = {
            "state": "up",
            "master": await _index(ipr, namespace, bridge),
        }
        if mtu:
            settings["mtu"] = mtu
        await ipr.link("set", index=index, **settings)


@plain_loop
async def flood_peers(namespace: str | None, name: str) -> set[str]:
    """The peer VTEPs ``name`` floods to (its all-zeros FDB entries)."""
    async with _ipr(namespace) as ipr:
        index = await _index(ipr, namespace, name)
        found = set()
        async for msg in await ipr.fdb("dump", ifindex=index):
            if msg.get("ifindex") == index and msg.get("NDA_LLADDR") == _FLOOD:
                dst = msg.get("NDA_DST")
                if dst:
                    found.add(str(dst))
        return found


@plain_loop
async def set_flood_peers(namespace: str | None, name: str, peers: set[str]) -> None:
    """Make ``peers`` exactly the VTEPs ``name`` floods broadcasts and unknown unicast to."""
    have = await flood_peers(namespace, name)
    async with _ipr(namespace) as ipr:
        index = await _index(ipr, namespace, name)
        for peer in sorted(peers - have):
            await _fdb(ipr, "append", index, peer)
        for peer in sorted(have - peers):
            await _fdb(ipr, "del", index, peer)


async def _fdb(ipr: Any, command: str, index: int, peer: str) -> None:
    try:
        await ipr.fdb(
            command,
            ifindex=index,
            lladdr=_FLOOD,
            dst=peer,
            state=_NUD_PERMANENT,
            flags=_NTF_SELF,
            family=socket.AF_BRIDGE,
        )
    except NetlinkError as exc:
        if not (command == "append" and exc.code == _EEXIST) and exc.code != _ENOENT:
            raise LinuxError(f"cannot {command} flood entry {peer} on {index}: {exc}") from exc
