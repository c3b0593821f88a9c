"""The L3 agent end to end: real namespaces, bridges, iptables, admin API, metadata API, agent.

Two networks on one router, one instance on each. Without force_metadata the instances have
no 169.254.169.254 route: their requests leave by the default gateway, the router's REDIRECT
sends them to its proxy on 9697, and each gets its own meta_data.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from l3_cloud import META_IP, L3Cloud, curl, start_cloud, until, uuid_of

from cloudmeta import linux
from cloudmeta.adminclient import AdminError
from cloudmeta.config import Config, ProxyMode
from cloudmeta.l3.agent import L3Agent
from cloudmeta.l3.model import interface_name, router_namespace
from cloudmeta.linux.netns import NETNS_DIR
from cloudmeta.linux.probe import ping
from cloudmeta.proxy.manager import MetadataProxyManager

pytestmark = pytest.mark.root

NET_A, GW_A, IP_A = "192.0.2.0/24", "192.0.2.1", "192.0.2.10"
NET_B, GW_B, IP_B = "198.51.100.0/24", "198.51.100.1", "198.51.100.10"


@pytest.fixture
async def cloud(make_config: Callable[..., Config], state_dir: Path) -> AsyncIterator[L3Cloud]:
    made = await start_cloud(make_config, state_dir)
    try:
        yield made
    finally:
        await made.close()


async def _two_networks(cloud: L3Cloud) -> tuple[str, tuple[str, str], tuple[str, str]]:
    net_a, sub_a = await cloud.network(NET_A)
    net_b, sub_b = await cloud.network(NET_B)
    router = await cloud.admin.create_router(cloud.ns("router"), project_id=cloud.project_id)
    await cloud.admin.add_router_interface(router["id"], sub_a)
    await cloud.admin.add_router_interface(router["id"], sub_b)
    return router["id"], (net_a, sub_a), (net_b, sub_b)


async def test_router_path_serves_metadata_routes_and_unplugs(cloud: L3Cloud) -> None:
    router_id, (net_a, _), (net_b, sub_b) = await _two_networks(cloud)
    stale = cloud.config.namespace_prefix + f"qrouter-{uuid.uuid4()}"
    linux.create_namespace(stale)
    cloud.start_l3()
    await cloud.settle()
    assert not linux.namespace_exists(stale), "stale router namespace left behind"

    ns = cloud.router_ns(router_id)
    router = (await cloud.admin.get_router(router_id))["interfaces"]
    port_b = next(i["port_id"] for i in router if i["subnet_id"] == sub_b)
    qr_b = interface_name("cmt-", port_b)
    addresses = {a.cidr for a in await linux.list_addresses(ns) if a.scope == 0}
    assert {f"{GW_A}/24", f"{GW_B}/24"} <= addresses
    assert (await linux.run(["sysctl", "-n", "net.ipv4.ip_forward"], namespace=ns)).stdout == "1\n"
    mac_b = (await cloud.admin.get_port(port_b))["mac_address"]
    assert {(link.name, link.mac) for link in await linux.list_links(ns)} >= {(qr_b, mac_b)}

    vm_a = await cloud.instance(1, net_a, IP_A, gateway=GW_A)
    vm_b = await cloud.instance(2, net_b, IP_B, gateway=GW_B)
    for vm in (vm_a, vm_b):
        routes = await linux.list_routes(vm.namespace)
        assert not [r for r in routes if r.destination == f"{META_IP}/32"]

    before = await cloud.redirect_packets(router_id)
    for vm in (vm_a, vm_b):
        code, body, status = await curl(vm.namespace)
        assert (code, status) == (0, 200), body
        assert uuid_of(body) == vm.server_id
    assert await cloud.redirect_packets(router_id) >= before + 2

    assert await ping(vm_a.namespace, IP_B) is not None
    assert await ping(vm_b.namespace, IP_A) is not None

    # The proxy port itself is closed to anything not redirected from 169.254.169.254.
    code, _, _ = await curl(vm_a.namespace, url=f"http://{GW_A}:9697/", max_time=2)
    assert code != 0

    await cloud.admin.remove_router_interface(router_id, sub_b)
    await cloud.settle()
    assert qr_b not in await cloud.router_links(router_id)
    # Nothing answers for the gateway any more: curl gives up within its short limit (no
    # route or ARP failure: exit 7; ARP entry still cached: exit 28), reaching no proxy.
    before = await cloud.redirect_packets(router_id)
    code, _, status = await curl(vm_b.namespace, max_time=3)
    assert code in (7, 28) and status == 0
    assert await cloud.redirect_packets(router_id) == before
    code, body, status = await curl(vm_a.namespace)
    assert status == 200 and uuid_of(body) == vm_a.server_id
    assert await ping(vm_a.namespace, IP_B) is None


async def test_router_deleted_removes_namespace_and_rules(cloud: L3Cloud) -> None:
    router_id, (_, sub_a), (_, sub_b) = await _two_networks(cloud)
    cloud.start_l3()
    await cloud.settle()
    ns = cloud.router_ns(router_id)
    assert linux.namespace_exists(ns)
    # Building again changes nothing: one jump per chain of ours, the same rules.
    saved = (await linux.run(["iptables-save"], namespace=ns)).stdout
    await cloud.l3.manager.ensure(cloud.l3.routers[router_id])
    again = (await linux.run(["iptables-save"], namespace=ns)).stdout
    assert _rules(again) == _rules(saved)
    for chain in ("cloudmeta-l3-mark", "cloudmeta-l3-redirect", "cloudmeta-l3-input"):
        assert _rules(again).count(f"-j {chain}") == 1
    host = (await linux.run(["iptables-save"])).stdout
    assert "cloudmeta-l3" not in host, "the host's own iptables must never be touched"
    for subnet in (sub_a, sub_b):
        await cloud.admin.remove_router_interface(router_id, subnet)
    await cloud.admin.delete_router(router_id)
    await cloud.settle()
    assert not linux.namespace_exists(ns)
    assert router_id not in cloud.l3.routers


async def test_interface_on_subnet_without_gateway_is_refused(cloud: L3Cloud) -> None:
    _, subnet = await cloud.network("203.0.113.0/24", no_gateway=True)
    router = await cloud.admin.create_router(cloud.ns("router"), project_id=cloud.project_id)
    with pytest.raises(AdminError) as refused:
        await cloud.admin.add_router_interface(router["id"], subnet)
    assert refused.value.status == 400


async def test_broken_router_retried_without_blocking_others(cloud: L3Cloud) -> None:
    router_id, (net_a, _), _ = await _two_networks(cloud)
    broken = await cloud.admin.create_router(cloud.ns("broken"), project_id=cloud.project_id)
    # A plain file where the namespace mount should be: entering it fails until it is gone.
    bogus = NETNS_DIR / router_namespace(cloud.config.namespace_prefix, broken["id"])
    bogus.touch()
    try:
        cloud.start_l3()
        await cloud.settle()
        assert cloud.l3.failures(broken["id"]) >= 1
        vm = await cloud.instance(1, net_a, IP_A, gateway=GW_A)
        _, body, status = await curl(vm.namespace)
        assert status == 200 and uuid_of(body) == vm.server_id
    finally:
        bogus.unlink(missing_ok=True)
    ns = cloud.router_ns(broken["id"])

    async def built() -> bool:
        links = await linux.list_links(ns) if linux.namespace_exists(ns) else []
        return bool(links) and cloud.l3.routers.get(broken["id"]) is not None

    await until(built, timeout=30)
    assert router_id in cloud.l3.routers


@pytest.mark.parametrize("force_metadata", [False, True], ids=["router-path", "force-metadata"])
async def test_with_dhcp_agent(
    make_config: Callable[..., Config], state_dir: Path, force_metadata: bool
) -> None:
    """Instances configured by dhclient from the DHCP agent's dnsmasq. Without force_metadata
    the request goes via the default gateway into the router; with it, to the DHCP port
    (option 121 route), and the router path still gives the same document."""
    cloud = await start_cloud(make_config, state_dir, force_metadata=force_metadata)
    try:
        router_id, (net_a, _), (net_b, _) = await _two_networks(cloud)
        cloud.start_dhcp()
        cloud.start_l3()
        await cloud.settle()
        vm_a, vm_b = await asyncio.gather(
            cloud.instance(1, net_a, IP_A, gateway=None, dhcp=True),
            cloud.instance(2, net_b, IP_B, gateway=None, dhcp=True),
        )
        assert await ping(vm_a.namespace, IP_B) is not None

        for vm, net, gateway in ((vm_a, net_a, GW_A), (vm_b, net_b, GW_B)):
            routes = await linux.list_routes(vm.namespace)
            assert [r.via for r in routes if r.destination == "default"] == [gateway]
            meta = [r.via for r in routes if r.destination == f"{META_IP}/32"]
            before = await cloud.redirect_packets(router_id)
            _, body, status = await curl(vm.namespace)
            assert status == 200 and uuid_of(body) == vm.server_id
            redirected = await cloud.redirect_packets(router_id) - before
            if not force_metadata:
                # No metadata host route on a routed subnet: the default route leads there.
                assert meta == [] and redirected > 0, (routes, redirected)
                continue
            (dhcp_port,) = await cloud.admin.list_ports(network_id=net, device_owner="network:dhcp")
            dhcp_ip = dhcp_port["fixed_ips"][0]["ip_address"]
            assert meta == [dhcp_ip] and redirected == 0, (routes, dhcp_ip, redirected)
            # Without the pushed route the same instance goes through the router: same document.
            await linux.delete_route(vm.namespace, f"{META_IP}/32", via=meta[0])
            _, via_router, status = await curl(vm.namespace)
            assert status == 200 and await cloud.redirect_packets(router_id) > before
            assert _without_random(via_router) == _without_random(body)
    finally:
        await cloud.close()


def _rules(saved: str) -> str:
    """iptables-save output without comments and counters: the rules only."""
    return "\n".join(ln for ln in saved.splitlines() if ln[:1] not in ("#", ":"))


def _without_random(body: str) -> dict[str, object]:
    document: dict[str, object] = json.loads(body)
    document.pop("random_seed", None)
    return document


@pytest.mark.parametrize("mode", [ProxyMode.PROCESS, ProxyMode.HAPROXY])
async def test_router_proxy_process_respawned(
    make_config: Callable[..., Config], state_dir: Path, mode: ProxyMode
) -> None:
    """A router's proxy child killed is started again by the monitor the agent runs."""
    cloud = await start_cloud(make_config, state_dir, unix_socket=True, metadata_proxy_mode=mode)
    try:
        net, subnet = await cloud.network(NET_A)
        router = await cloud.admin.create_router(cloud.ns("router"), project_id=cloud.project_id)
        await cloud.admin.add_router_interface(router["id"], subnet)
        cloud.start_l3()
        await cloud.settle()
        vm = await cloud.instance(1, net, IP_A, gateway=GW_A)
        ns = cloud.router_ns(router["id"])
        # A child proxy answers once it has started up (a Python one takes a moment).
        await until(lambda: _answers(vm.namespace, vm.server_id), timeout=20)

        assert cloud.proxies is not None
        old = cloud.proxies.pids()[ns]
        os.kill(old, signal.SIGKILL)

        async def respawned() -> bool:
            assert cloud.proxies is not None
            return cloud.proxies.pids().get(ns, old) != old

        await until(respawned, timeout=20)
        await until(lambda: _answers(vm.namespace, vm.server_id), timeout=20)
    finally:
        await cloud.close()


async def _answers(namespace: str, server_id: str) -> bool:
    _, body, status = await curl(namespace, max_time=2)
    return status == 200 and uuid_of(body) == server_id


async def test_restarted_agent_removes_router_deleted_while_down(
    make_config: Callable[..., Config], state_dir: Path
) -> None:
    """The agent stops (namespace and proxy child stay); the router is deleted meanwhile; the
    next agent's full sync removes the stale namespace and stops the orphaned proxy."""
    cloud = await start_cloud(
        make_config, state_dir, unix_socket=True, metadata_proxy_mode=ProxyMode.HAPROXY
    )
    try:
        _, subnet = await cloud.network(NET_A)
        router = await cloud.admin.create_router(cloud.ns("router"), project_id=cloud.project_id)
        await cloud.admin.add_router_interface(router["id"], subnet)
        cloud.start_l3()
        await cloud.settle()
        ns = cloud.router_ns(router["id"])
        assert cloud.proxies is not None and cloud.monitor is not None
        orphan = cloud.proxies.pids()[ns]
        for task in cloud.tasks:
            task.cancel()
        await cloud.monitor.close()  # the old process is gone: nobody respawns its children

        await cloud.admin.remove_router_interface(router["id"], subnet)
        await cloud.admin.delete_router(router["id"])
        assert linux.namespace_exists(ns) and _alive(orphan)

        fresh = MetadataProxyManager(cloud.config)
        cloud.agents["l3"] = agent = L3Agent(cloud.config, cloud.admin, fresh)
        cloud.tasks.append(asyncio.create_task(agent.run()))
        await cloud.settle()
        assert not linux.namespace_exists(ns)
        assert not _alive(orphan)
    finally:
        await cloud.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


async def test_l3_agent_command_serves_and_stops_on_sigterm(cloud: L3Cloud) -> None:
    """``cloudmeta l3-agent`` as its own process (inline mode: its own embedded agent)."""
    net, subnet = await cloud.network(NET_A)
    router = await cloud.admin.create_router(cloud.ns("router"), project_id=cloud.project_id)
    await cloud.admin.add_router_interface(router["id"], subnet)
    c = cloud.config
    toml = cloud.state_dir / "cmt-l3.toml"
    toml.write_text(
        f'state_path = "{c.state_path}"\nnamespace_prefix = "{c.namespace_prefix}"\n'
        f'device_prefix = "{c.device_prefix}"\nadmin_url = "{c.admin_url}"\n'
        f'bridge_namespace = "{c.bridge_namespace}"\n'
        f"nova_metadata_port = {c.nova_metadata_port}\n"
        f'metadata_proxy_shared_secret = "{c.metadata_proxy_shared_secret.get_secret_value()}"\n'
        'log_format = "json"\n'
    )
    code = "from cloudmeta.cli.main import main; main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")}
    log = (cloud.state_dir / "cmt-l3.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, "--config", str(toml), "l3-agent",
        stdout=log, stderr=log, env=env,
    )  # fmt: skip
    try:
        vm = await cloud.instance(1, net, IP_A, gateway=GW_A)
        await until(lambda: _answers(vm.namespace, vm.server_id), timeout=30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        # Stopping leaves the router in place for the next run to adopt.
        assert linux.namespace_exists(router_namespace(c.namespace_prefix, router["id"]))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        log.close()
