"""Links, bridges, veth pairs, addresses and routes over netlink (pyroute2's AsyncIPRoute).

Every function takes the namespace first (``None`` = the host) and opens one netlink socket for
the call: the socket is created inside the namespace by a helper thread (see ``netns``), so no
process is forked and nothing stays open afterwards. Calls are idempotent where the name says so.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from cloudmeta.linux._loop import plain_loop
from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.netns import (
    NETNS_DIR,
    create_namespace,
    in_namespace,
    namespace_exists,
    set_sysctl,
)

__all__ = [
    "Address",
    "Link",
    "Route",
    "add_address",
    "add_route",
    "create_bridge",
    "delete_address",
    "delete_link",
    "delete_route",
    "flush_routes",
    "list_addresses",
    "list_links",
    "list_routes",
    "plug_veth",
    "set_link",
]

_IFA_F_NODAD = 0x02
_IFF_UP = 0x1
_EEXIST, _ENODEV, _ESRCH, _EADDRNOTAVAIL = 17, 19, 3, 99
_MAX_IFNAME = 15
_MAIN_TABLE = 254
_RTPROT_KERNEL = 2


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    index: int
    mac: str
    mtu: int
    up: bool
    kind: str | None  # "veth", "bridge", None for loopback and plain devices
    master: int | None  # bridge index for a bridge port


@dataclass(frozen=True, slots=True)
class Address:
    ifname: str
    cidr: str  # "192.0.2.2/24", "fe80::a9fe:a9fe/64"
    scope: int


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # "default" or a CIDR
    via: str | None
    dev: str | None
    kernel: bool = False  # added by the kernel for an address (proto kernel)


def _where(namespace: str | None) -> str:
    return f"namespace {namespace}" if namespace else "the host"


@contextlib.asynccontextmanager
async def _ipr(namespace: str | None) -> AsyncIterator[Any]:
    if namespace is None:
        ipr = AsyncIPRoute()
    else:
        sock = in_namespace(
            namespace, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 0)
        )
        ipr = AsyncIPRoute(use_socket=sock)
    try:
        yield ipr
    finally:
        ipr.close()


async def _index(ipr: Any, namespace: str | None, ifname: str) -> int:
    found = await ipr.link_lookup(ifname=ifname)
    if not found:
        raise LinuxError(f"no link {ifname} in {_where(namespace)}")
    return int(found[0])


def _check_name(name: str) -> None:
    if not name or len(name) > _MAX_IFNAME:
        raise LinuxError(f"link name {name!r} must be 1..{_MAX_IFNAME} characters")


@plain_loop
async def create_bridge(namespace: str | None, name: str, *, mtu: int | None = None) -> None:
    """Create and bring up bridge ``name`` (idempotent).

    ``nf_call_iptables``/``ip6tables``/``arptables`` are turned off on the bridge itself, so the
    host's iptables never see (or drop) frames bridged between our ports even where br_netfilter
    is loaded with ``bridge-nf-call-iptables = 1``; no host sysctl is changed.

    The bridge is L2 only: no IPv6 on it and ``arp_ignore = 8`` on its own conf. Otherwise the
    kernel of the namespace holding it answers ARP on it for that namespace's own addresses;
    on a host whose LAN happens to use an instance network's range, instances then resolve
    their DHCP port or gateway to the bridge and their packets vanish into the host.

    A ``namespace`` that does not exist yet (the configured bridge namespace) is created.
    """
    _check_name(name)
    if namespace and not namespace_exists(namespace):
        create_namespace(namespace)
    async with _ipr(namespace) as ipr:
        if not await ipr.link_lookup(ifname=name):
            try:
                await ipr.link(
                    "add",
                    ifname=name,
                    kind="bridge",
                    br_nf_call_iptables=0,
                    br_nf_call_ip6tables=0,
                    br_nf_call_arptables=0,
                    br_forward_delay=0,
                )
            except NetlinkError as exc:
                if exc.code != _EEXIST:
                    raise LinuxError(f"cannot create bridge {name}: {exc}") from exc
        index = await _index(ipr, namespace, name)
        set_sysctl(namespace, f"net.ipv6.conf.{name}.disable_ipv6", 1)
        set_sysctl(namespace, f"net.ipv4.conf.{name}.arp_ignore", 8)
        extra = {"mtu": mtu} if mtu else {}
        await ipr.link("set", index=index, state="up", **extra)


@plain_loop
async def plug_veth(
    namespace: str,
    ifname: str,
    *,
    mac: str,
    host_ifname: str,
    bridge: str | None = None,
    mtu: int | None = None,
    bridge_namespace: str | None = None,
) -> None:
    """Plug a port: veth ``host_ifname`` (on ``bridge``, in ``bridge_namespace``) <-> ``ifname``
    in ``namespace`` with ``mac`` and ``mtu``, both ends up.

    Idempotent: an existing ``ifname`` in ``namespace`` is kept (its MAC/MTU/state fixed), so
    processes bound to it (dnsmasq) are not disturbed.
    """
    _check_name(ifname)
    _check_name(host_ifname)
    async with _ipr(namespace) as inner:
        existing = await inner.link_lookup(ifname=ifname)
    if not existing:
        async with _ipr(bridge_namespace) as outer:
            if await outer.link_lookup(ifname=host_ifname):  # half-made leftover
                await outer.link("del", index=await _index(outer, bridge_namespace, host_ifname))
            fd = os.open(NETNS_DIR / namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                peer = {"ifname": ifname, "net_ns_fd": fd, "address": mac}
                await outer.link("add", ifname=host_ifname, kind="veth", peer=peer)
            except NetlinkError as exc:
                raise LinuxError(
                    f"cannot create veth {host_ifname}<->{ifname} in {namespace}: {exc}"
                ) from exc
            finally:
                os.close(fd)
    async with _ipr(bridge_namespace) as outer:
        index = await _index(outer, bridge_namespace, host_ifname)
        settings: dict[str, Any] = {"state": "up"}
        if mtu:
            settings["mtu"] = mtu
        if bridge:
            settings["master"] = await _index(outer, bridge_namespace, bridge)
        await outer.link("set", index=index, **settings)
    await set_link(namespace, ifname, mac=mac, mtu=mtu, up=True)


@plain_loop
async def delete_link(namespace: str | None, name: str) -> None:
    """Delete link ``name`` (idempotent; deleting one end of a veth deletes both)."""
    async with _ipr(namespace) as ipr:
        found = await ipr.link_lookup(ifname=name)
        if not found:
            return
        try:
            await ipr.link("del", index=found[0])
        except NetlinkError as exc:
            if exc.code != _ENODEV:
                raise LinuxError(f"cannot delete {name} in {_where(namespace)}: {exc}") from exc


@plain_loop
async def set_link(
    namespace: str | None,
    name: str,
    *,
    mac: str | None = None,
    mtu: int | None = None,
    up: bool | None = None,
) -> None:
    """Set a link's MAC, MTU and/or state (only what is given)."""
    settings: dict[str, Any] = {}
    if mac:
        settings["address"] = mac
    if mtu:
        settings["mtu"] = mtu
    if up is not None:
        settings["state"] = "up" if up else "down"
    if not settings:
        return
    async with _ipr(namespace) as ipr:
        index = await _index(ipr, namespace, name)
        try:
            await ipr.link("set", index=index, **settings)
        except NetlinkError as exc:
            raise LinuxError(
                f"cannot set {settings} on {name} in {_where(namespace)}: {exc}"
            ) from exc


@plain_loop
async def list_links(namespace: str | None) -> list[Link]:
    async with _ipr(namespace) as ipr:
        return [
            Link(
                name=msg.get("ifname"),
                index=msg["index"],
                mac=msg.get("address") or "",
                mtu=msg.get("mtu") or 0,
                up=bool(msg["flags"] & _IFF_UP),
                kind=msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                master=msg.get("master"),
            )
            async for msg in await ipr.link("dump")
        ]


def _split_cidr(cidr: str) -> tuple[str, int, int]:
    iface = ipaddress.ip_interface(cidr)
    family = socket.AF_INET6 if iface.version == 6 else socket.AF_INET
    return str(iface.ip), iface.network.prefixlen, family


@plain_loop
async def add_address(
    namespace: str | None, ifname: str, cidr: str, *, nodad: bool = False
) -> None:
    """Add ``cidr`` (``192.0.2.2/24``, ``fe80::a9fe:a9fe/64``) to ``ifname`` (idempotent)."""
    address, prefixlen, family = _split_cidr(cidr)
    async with _ipr(namespace) as ipr:
        index = await _index(ipr, namespace, ifname)
        extra = {"flags": _IFA_F_NODAD} if nodad and family == socket.AF_INET6 else {}
        try:
            await ipr.addr(
                "add", index=index, address=address, prefixlen=prefixlen, family=family, **extra
            )
        except NetlinkError as exc:
            if exc.code != _EEXIST:
                raise LinuxError(
                    f"cannot add {cidr} to {ifname} in {_where(namespace)}: {exc}"
                ) from exc


@plain_loop
async def delete_address(namespace: str | None, ifname: str, cidr: str) -> None:
    """Remove ``cidr`` from ``ifname`` (idempotent)."""
    address, prefixlen, family = _split_cidr(cidr)
    async with _ipr(namespace) as ipr:
        found = await ipr.link_lookup(ifname=ifname)
        if not found:
            return
        try:
            await ipr.addr(
                "del", index=found[0], address=address, prefixlen=prefixlen, family=family
            )
        except NetlinkError as exc:
            if exc.code != _EADDRNOTAVAIL:
                raise LinuxError(f"cannot remove {cidr} from {ifname}: {exc}") from exc


@plain_loop
async def list_addresses(namespace: str | None, ifname: str | None = None) -> list[Address]:
    async with _ipr(namespace) as ipr:
        names = {msg["index"]: msg.get("ifname") async for msg in await ipr.link("dump")}
        result = []
        async for msg in await ipr.addr("dump"):
            name = names.get(msg["index"], "")
            if ifname is None or name == ifname:
                cidr = f"{msg.get('address')}/{msg['prefixlen']}"
                result.append(Address(ifname=name, cidr=cidr, scope=msg["scope"]))
        return result


def _route_spec(destination: str, via: str | None) -> tuple[str, int]:
    if destination == "default":
        family = socket.AF_INET6 if via and ":" in via else socket.AF_INET
        return ("::/0" if family == socket.AF_INET6 else "0.0.0.0/0"), family
    net = ipaddress.ip_network(destination, strict=False)
    return str(net), socket.AF_INET6 if net.version == 6 else socket.AF_INET


@plain_loop
async def add_route(
    namespace: str | None, destination: str, *, via: str | None = None, dev: str | None = None
) -> None:
    """Add or replace a route (``"default"`` or a CIDR) via a gateway and/or out of ``dev``."""
    dst, family = _route_spec(destination, via)
    async with _ipr(namespace) as ipr:
        spec: dict[str, Any] = {"dst": dst, "family": family}
        if via:
            spec["gateway"] = via
        if dev:
            spec["oif"] = await _index(ipr, namespace, dev)
        try:
            await ipr.route("replace", **spec)
        except NetlinkError as exc:
            raise LinuxError(
                f"cannot add route {destination} via {via} dev {dev} in {_where(namespace)}: {exc}"
            ) from exc


@plain_loop
async def delete_route(
    namespace: str | None, destination: str, *, via: str | None = None, dev: str | None = None
) -> None:
    """Delete a route (idempotent)."""
    dst, family = _route_spec(destination, via)
    spec: dict[str, Any] = {"dst": dst, "family": family}
    if via:
        spec["gateway"] = via
    async with _ipr(namespace) as ipr:
        if dev:
            found = await ipr.link_lookup(ifname=dev)
            if not found:
                return
            spec["oif"] = found[0]
        try:
            await ipr.route("del", **spec)
        except NetlinkError as exc:
            if exc.code != _ESRCH:
                raise LinuxError(f"cannot delete route {destination}: {exc}") from exc


@plain_loop
async def list_routes(namespace: str | None, *, version: int = 4) -> list[Route]:
    """Routes of the main table for IP ``version``, like ``ip route`` shows them."""
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    async with _ipr(namespace) as ipr:
        names = {msg["index"]: msg.get("ifname") async for msg in await ipr.link("dump")}
        result = []
        async for msg in await ipr.route("dump", family=family):
            if msg.get("table") != _MAIN_TABLE:
                continue
            dst = msg.get("dst")
            destination = f"{dst}/{msg['dst_len']}" if dst else "default"
            oif = msg.get("oif")
            dev = names.get(oif) if oif else None
            kernel = msg["proto"] == _RTPROT_KERNEL
            result.append(Route(destination, msg.get("gateway"), dev, kernel))
        return result


@plain_loop
async def flush_routes(namespace: str, *, dev: str | None = None, version: int = 4) -> None:
    """Delete every main-table route (of ``dev`` only, if given) except the kernel's own."""
    for route in await list_routes(namespace, version=version):
        if route.kernel or (dev and route.dev != dev):
            continue
        await delete_route(namespace, route.destination, via=route.via, dev=route.dev)
