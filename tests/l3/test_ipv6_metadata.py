"""IPv6 metadata end to end (issue 16): ``curl -g 'http://[fe80::a9fe:a9fe%25eth0]/...'`` from
namespace instances, with the real DHCP and L3 agents, in every proxy mode.

One cloud per mode:
* ``dual``: 192.0.2.0/24 + 2001:db8::/64, isolated: the DHCP path (fe80::a9fe:a9fe/128 nodad
  on the DHCP port);
* ``v6only``: 2001:db8::/64 only (the SAME prefix as ``dual``: overlapping IPv6), isolated:
  the DHCP path with no IPv4 subnet at all;
* ``routed``: 198.51.100.0/24 + 2001:db8:1::/64 on a router: the router path (ip6tables
  REDIRECT to the proxy on [::]:9697).
Instances use the kernel's EUI-64 link-local address or a random one (``addrgenmode random``,
what stable-privacy and temporary addresses look like to the service: no MAC in them), and
their fixed IPs statically. The spoofing attacks of issue 8, in IPv6: another instance's
link-local address, MAC or global address, or identity headers naming it, get nothing of it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from l3_cloud import L3Cloud, start_cloud, until, uuid_of

from cloudmeta import linux
from cloudmeta.config import Config, ProxyMode
from cloudmeta.dhcp.driver import dhcp_namespace
from cloudmeta.l3.rules import NAT_CHAIN
from cloudmeta.linux.iptables import iptables_counters
from cloudmeta.linux.names import bridge_name
from cloudmeta.linux.peer import neighbours
from support.report import record

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

FORGE_ND = Path(__file__).resolve().parents[1] / "support" / "forge_nd.py"

BASE = "http://[fe80::a9fe:a9fe%25eth0]"
URL = f"{BASE}/openstack/latest/meta_data.json"
# What cloud-init's DataSourceOpenStack asks (from 24.2 it asks it over this address first).
CLOUD_INIT = (
    "/openstack",
    "/openstack/2018-08-27/meta_data.json",
    "/openstack/2018-08-27/user_data",
    "/openstack/2018-08-27/vendor_data.json",
    "/openstack/2018-08-27/vendor_data2.json",
    "/openstack/2018-08-27/network_data.json",
)
DEVICE_PREFIX = "cmt-"


@dataclass
class Vm:
    namespace: str
    server_id: str
    port_id: str
    mac: str
    v6: str  # its fixed IPv6
    link_local: str


async def _curl(
    namespace: str,
    *,
    source: str | None = None,
    headers: tuple[str, ...] = (),
    seconds: float = 5,
    url: str = URL,
) -> tuple[int, str]:
    """``curl -g`` to the IPv6 metadata address from ``namespace``: (HTTP status, body)."""
    argv = ["curl", "-g", "-s", "-m", f"{seconds:g}", "-o", "-", "-w", "\n%{http_code}", url]
    if source:
        argv += ["--interface", source]
    for header in headers:
        argv += ["-H", header]
    result = await linux.run(argv, namespace=namespace, check=False, timeout=seconds + 5)
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


async def _link_local(namespace: str) -> str | None:
    for address in await linux.list_addresses(namespace, "eth0"):
        ip = ipaddress.ip_interface(address.cidr).ip
        if ip.version == 6 and ip.is_link_local:
            return str(ip)
    return None


async def _vm(
    cloud: L3Cloud, index: int, network_id: str, *, random_ll: bool, fixed_v6: str | None = None
) -> Vm:
    """A server on ``network_id``, its namespace on the bridge, its fixed IPs set statically."""
    fixed = {"fixed_ip": fixed_v6} if fixed_v6 else {}
    server, port, ns = await cloud.plug(index, network_id, fixed)
    linux.set_sysctl(ns, "net.ipv6.conf.eth0.accept_dad", 0)  # no second of tentative
    await linux.set_link(ns, "eth0", up=False)
    mode = "random" if random_ll else "eui64"
    await linux.run(["ip", "link", "set", "eth0", "addrgenmode", mode], namespace=ns)
    await linux.set_link(ns, "eth0", up=True)
    v6 = ""
    for fixed in port["fixed_ips"]:
        ip = ipaddress.ip_address(fixed["ip_address"])
        prefix = 24 if ip.version == 4 else 64
        await linux.add_address(ns, "eth0", f"{ip}/{prefix}", nodad=True)
        v6 = str(ip) if ip.version == 6 else v6

    async def has_link_local() -> bool:
        return await _link_local(ns) is not None

    await until(has_link_local, timeout=10)
    link_local = await _link_local(ns)
    assert link_local is not None
    mac = port["mac_address"].lower()
    eui = _eui64(mac)
    assert (link_local == eui) is not random_ll, (link_local, eui)
    return Vm(ns, server["id"], port["id"], mac, v6, link_local)


def _eui64(mac: str) -> str:
    octets = [int(p, 16) for p in mac.split(":")]
    octets[0] ^= 0x02
    raw = bytes([0xFE, 0x80, *bytes(6), *octets[:3], 0xFF, 0xFE, *octets[3:]])
    return str(ipaddress.IPv6Address(raw))


async def _answers(vm: Vm, **kwargs: str) -> bool:
    status, body = await _curl(vm.namespace, seconds=2, **kwargs)  # type: ignore[arg-type]
    return status == 200 and uuid_of(body) == vm.server_id


@dataclass
class Scene:
    cloud: L3Cloud
    router_id: str
    dual: str
    v6only: str
    routed: str
    vms: dict[str, Vm]


async def _scene(cloud: L3Cloud) -> Scene:
    pid = cloud.project_id
    dual, _ = await cloud.network("192.0.2.0/24")
    await cloud.admin.create_subnet(dual, "2001:db8::/64", ip_version=6, project_id=pid)
    v6only, _ = await cloud.network("2001:db8::/64", ip_version=6)
    routed, sub4 = await cloud.network("198.51.100.0/24")
    sub6 = await cloud.admin.create_subnet(routed, "2001:db8:1::/64", ip_version=6, project_id=pid)
    router = await cloud.admin.create_router(cloud.ns("router"), project_id=pid)
    await cloud.admin.add_router_interface(router["id"], sub4)
    await cloud.admin.add_router_interface(router["id"], sub6["id"])
    cloud.start_dhcp()
    cloud.start_l3()
    await cloud.settle()
    eui = await _vm(cloud, 1, dual, random_ll=False)
    rnd, other, r_eui, r_rnd = await asyncio.gather(
        _vm(cloud, 2, dual, random_ll=True),
        _vm(cloud, 3, v6only, random_ll=True, fixed_v6=eui.v6),
        _vm(cloud, 4, routed, random_ll=False),
        _vm(cloud, 5, routed, random_ll=True),
    )
    return Scene(
        cloud,
        router["id"],
        dual,
        v6only,
        routed,
        {"eui": eui, "random": rnd, "v6only": other, "router-eui": r_eui, "router-random": r_rnd},
    )


async def _stranger(cloud: L3Cloud, network_id: str) -> str:
    """A namespace on the network's bridge whose MAC is no port of it (nothing filters it)."""
    ns = cloud.ns("stranger")
    linux.create_namespace(ns)
    await linux.plug_veth(
        ns,
        "eth0",
        mac="fa:16:3e:5e:e0:01",
        host_ifname=f"cmt-s{cloud.tag}"[:15],
        bridge=bridge_name(DEVICE_PREFIX, network_id),
        bridge_namespace=cloud.bridge_namespace,
    )
    return ns


@pytest.mark.parametrize("mode", list(ProxyMode), ids=str)
async def test_ipv6_metadata_both_paths(
    make_config: Callable[..., Config],
    state_dir: Path,
    mode: ProxyMode,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cloud = await start_cloud(
        make_config,
        state_dir,
        unix_socket=mode is not ProxyMode.INLINE,
        tag="v6p",
        metadata_proxy_mode=mode,
        enable_isolated_metadata=True,
    )
    try:
        scene = await _scene(cloud)
        vms = scene.vms
        # The overlap: the same fixed IPv6 on two networks.
        assert vms["eui"].v6 == vms["v6only"].v6
        for network in (scene.dual, scene.v6only):
            await _metadata_address_ready(cloud, network)

        # Every instance, whatever its link-local address, on both paths (child proxies
        # need a moment to listen).
        for vm in vms.values():
            await until(lambda vm=vm: _answers(vm), timeout=20)  # type: ignore[misc]
        # cloud-init's request sequence on the IPv6-only network (no user data: 404).
        answers = [await _curl(vms["v6only"].namespace, url=BASE + path) for path in CLOUD_INIT]
        assert [status for status, _ in answers] == [200, 200, 404, 200, 200, 200], answers
        assert "2018-08-27" in answers[0][1] and uuid_of(answers[1][1]) == vms["v6only"].server_id
        # its network_data.json describes an IPv6 network (ipv6_dhcp, ipv6_slaac, ...)
        networks = json.loads(answers[5][1])["networks"]
        assert [n["type"][:4] for n in networks] == ["ipv6"], networks
        # From its global address (looked up by address): the overlap resolves per network.
        for name in ("eui", "v6only", "router-random"):
            assert await _answers(vms[name], source=vms[name].v6), name
        router_ns = cloud.router_ns(scene.router_id)
        redirected = await iptables_counters(router_ns, "nat", NAT_CHAIN, ipv6=True)
        assert sum(c.packets for c in redirected) > 0, redirected

        # A MAC that is no port of the network: 404, and the agent says so.
        stranger = await _stranger(cloud, scene.dual)
        capsys.readouterr()
        status = 0
        for _ in range(20):  # its link-local address may still be tentative
            status, body = await _curl(stranger, seconds=2)
            if status:
                break
            await asyncio.sleep(0.2)
        assert status == 404, (status, body)
        assert "no unique port for the caller" in capsys.readouterr().out

        # Neighbour discovery naming the victim's MAC: dropped on the bridge, so neither
        # metadata namespace ever maps an address to a MAC its owner did not announce.
        for me, victim, ns in (
            (vms["random"], vms["eui"], dhcp_namespace(cloud.config, scene.dual)),
            (vms["router-random"], vms["router-eui"], router_ns),
        ):
            await _forged_nd(me, victim, ns)

        tries, leaks, seen = await _spoofing(vms)
        record("attack", f"{mode}:ipv6-spoof", tries=tries, leaks=leaks, **seen)
        assert leaks == 0
        # Headers: the attacker's own document; the victim's global address or MAC: nothing
        # (port security); its link-local address: nothing (the answer goes to the victim's
        # MAC, which resets it) or the attacker's own document.
        for path in ("dhcp", "router"):
            assert seen[f"{path}:headers"] == 200, seen
            assert seen[f"{path}:link-local"] in (0, 200), seen
            assert seen[f"{path}:global-ip"] == seen[f"{path}:link-local+mac"] == 0, seen
        # The victims keep their own documents.
        for name in ("eui", "random", "router-eui"):
            assert await _answers(vms[name]), name
    finally:
        await cloud.close()


async def _forged_nd(me: Vm, victim: Vm, namespace: str) -> None:
    argv = [sys.executable, str(FORGE_ND), me.link_local, "eth0", victim.mac]
    await linux.run(argv, namespace=me.namespace)
    await asyncio.sleep(0.3)
    table = {(n.address, n.mac) for n in neighbours(namespace)}
    assert (me.link_local, victim.mac) not in table, table


async def _metadata_address_ready(cloud: L3Cloud, network_id: str) -> None:
    """fe80::a9fe:a9fe/128 on the DHCP port, never tentative (nodad)."""
    ns = dhcp_namespace(cloud.config, network_id)
    out = (await linux.run(["ip", "-6", "addr", "show"], namespace=ns)).stdout
    line = next(ln for ln in out.splitlines() if "fe80::a9fe:a9fe" in ln)
    assert "fe80::a9fe:a9fe/128" in line and "tentative" not in line, out


async def _spoofing(vms: dict[str, Vm]) -> tuple[int, int, dict[str, int]]:
    """The attacker (``random``) against its neighbour (``eui``) on the same network, and
    ``router-random`` against ``router-eui``; 0 leaks expected. Also what each attack got
    (HTTP status; 200 is the attacker's own document, 0 no answer)."""
    tries = leaks = 0
    seen: dict[str, int] = {}

    async def attempt(name: str, me: Vm, victim: Vm, **kwargs: object) -> None:
        nonlocal tries, leaks
        status, body = await _curl(me.namespace, seconds=3, **kwargs)  # type: ignore[arg-type]
        tries += 1
        leaked = victim.server_id in body
        leaks += leaked
        seen[name] = status
        assert not leaked, (kwargs, status, body)
        # Either nothing, or its own document.
        assert status in (0, 404) or uuid_of(body) == me.server_id, (kwargs, status, body)

    pairs = (
        ("dhcp", vms["random"], vms["eui"]),
        ("router", vms["router-random"], vms["router-eui"]),
    )
    for path, me, victim in pairs:
        # Identity headers naming the victim: dropped by every proxy.
        await attempt(
            f"{path}:headers",
            me,
            victim,
            headers=(
                f"X-Forwarded-For: {victim.link_local}",
                f"X-Neutron-Source-MAC: {victim.mac}",
                f"X-Forwarded-For: {victim.v6}",
            ),
        )
        # The victim's global address as source: port security drops it.
        await linux.add_address(me.namespace, "eth0", f"{victim.v6}/128", nodad=True)
        await attempt(f"{path}:global-ip", me, victim, source=victim.v6)
        await linux.delete_address(me.namespace, "eth0", f"{victim.v6}/128")
        # The victim's link-local address (its EUI-64): allowed on the wire, but the MAC says
        # who asks.
        await linux.delete_address(me.namespace, "eth0", f"{me.link_local}/64")
        await linux.add_address(me.namespace, "eth0", f"{victim.link_local}/64", nodad=True)
        await attempt(f"{path}:link-local", me, victim)
        await linux.delete_address(me.namespace, "eth0", f"{victim.link_local}/64")
        # And the victim's MAC too: its frames never leave the port.
        own_mac = me.mac
        await linux.set_link(me.namespace, "eth0", mac=victim.mac)
        await linux.add_address(me.namespace, "eth0", f"{victim.link_local}/64", nodad=True)
        await attempt(f"{path}:link-local+mac", me, victim)
        await linux.delete_address(me.namespace, "eth0", f"{victim.link_local}/64")
        await linux.set_link(me.namespace, "eth0", mac=own_mac)
        await linux.add_address(me.namespace, "eth0", f"{me.link_local}/64", nodad=True)
    return tries, leaks, seen
