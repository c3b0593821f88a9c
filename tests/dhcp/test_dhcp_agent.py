"""The DHCP agent end to end: real dnsmasq in qdhcp namespaces, real dhclient, real metadata chain.

The seed's scenario: an instance gets its address and the host route 169.254.169.254 via the
DHCP port from option 121, and reads its own meta_data.json through the DHCP namespace's proxy.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from dhcp_cloud import DhcpCloud, curl_metadata, start_cloud, uuid_of

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.linux.process import cmdline
from cloudmeta.scheduler import dhcp_device_id

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

CloudFactory = Callable[..., Awaitable[DhcpCloud]]


@pytest.fixture
async def make_cloud(make_config: Callable[..., Config]) -> AsyncIterator[CloudFactory]:
    made: list[DhcpCloud] = []

    async def factory(**overrides: Any) -> DhcpCloud:
        cloud = await start_cloud(make_config, **overrides)
        made.append(cloud)
        return cloud

    try:
        yield factory
    finally:
        for cloud in made:
            await cloud.close()


async def metadata_route(namespace: str) -> str | None:
    routes = {r.destination: r.via for r in await linux.list_routes(namespace)}
    return routes.get("169.254.169.254/32")


async def dhcp_port(cloud: DhcpCloud, network_id: str) -> dict[str, Any]:
    assert cloud.client is not None
    ports = await cloud.client.list_ports(network_id=network_id, device_owner="network:dhcp")
    assert len(ports) == 1
    return dict(ports[0])


def dnsmasq_pid(cloud: DhcpCloud, network_id: str) -> int:
    assert cloud.agent is not None
    dnsmasq = cloud.agent.dnsmasq(network_id)
    assert dnsmasq is not None and dnsmasq.pid is not None
    return dnsmasq.pid


async def test_seed_scenario_force_metadata(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(force_metadata=True)
    network_id, subnet_id = await cloud.network("192.0.2.0/24")
    vm = await cloud.boot(network_id)

    port = await dhcp_port(cloud, network_id)
    dhcp_ip = port["fixed_ips"][0]["ip_address"]
    assert cloud.config is not None
    assert port["device_id"] == dhcp_device_id(network_id, cloud.config.host)
    assert dhcp_ip == "192.0.2.2"  # the first free address, as Neutron's IPAM
    namespace = cloud.namespace(network_id)
    assert linux.namespace_exists(namespace)
    device = cloud.agent.device(network_id) if cloud.agent else None
    assert device is not None
    cidrs = {a.cidr for a in await linux.list_addresses(namespace, device.ifname)}
    assert {"192.0.2.2/24", "169.254.169.254/32"} <= cidrs
    links = {link.name: link for link in await linux.list_links(namespace)}
    assert links[device.ifname].mac == port["mac_address"]

    assert f"{vm.ip}/24" in {a.cidr for a in await linux.list_addresses(vm.namespace, "eth0")}
    assert await metadata_route(vm.namespace) == dhcp_ip
    assert uuid_of(await curl_metadata(vm.namespace)) == vm.server_id
    # MTU and domain reach the client, though on dnsmasq's command line (Neutron's forms).
    lease = (cloud.dhclient_dir / vm.namespace / "dhclient-eth0.leases").read_text()
    assert "option interface-mtu 1500;" in lease, lease
    assert 'option domain-name "openstacklocal";' in lease, lease

    # A router on the subnet: with force_metadata the route still points at the DHCP port.
    await cloud.router_on(subnet_id)
    await cloud.synced()
    vm2 = await cloud.boot(network_id)
    assert await metadata_route(vm2.namespace) == dhcp_ip
    assert uuid_of(await curl_metadata(vm2.namespace)) == vm2.server_id


async def test_isolated_metadata_withdrawn_when_a_router_arrives(
    make_cloud: CloudFactory,
) -> None:
    cloud = await make_cloud(enable_isolated_metadata=True)
    network_id, subnet_id = await cloud.network("198.51.100.0/24")
    vm = await cloud.boot(network_id)
    dhcp_ip = (await dhcp_port(cloud, network_id))["fixed_ips"][0]["ip_address"]
    assert await metadata_route(vm.namespace) == dhcp_ip
    assert uuid_of(await curl_metadata(vm.namespace)) == vm.server_id

    await cloud.router_on(subnet_id)
    await cloud.synced()
    namespace = cloud.namespace(network_id)
    device = cloud.agent.device(network_id) if cloud.agent else None
    assert device is not None
    cidrs = {a.cidr for a in await linux.list_addresses(namespace, device.ifname)}
    assert "169.254.169.254/32" not in cidrs
    assert await curl_metadata(vm.namespace) == ""  # the proxy is gone too
    vm2 = await cloud.boot(network_id)
    # The router way: no metadata host route, the default route leads to the router.
    routes = {r.destination: r.via for r in await linux.list_routes(vm2.namespace)}
    assert "169.254.169.254/32" not in routes and routes["default"] == "198.51.100.1", routes


async def test_new_port_reloads_dnsmasq_without_restart(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(force_metadata=True)
    network_id, _ = await cloud.network("203.0.113.0/24")
    await cloud.synced()
    pid = dnsmasq_pid(cloud, network_id)
    hosts = cloud.base.state_path / "dhcp" / network_id / "host"
    _, port = await cloud.server(network_id)
    await cloud.synced()
    ip = port["fixed_ips"][0]["ip_address"]
    assert f"{port['mac_address']},host-{ip.replace('.', '-')}.openstacklocal,{ip}" in (
        hosts.read_text().splitlines()
    )
    assert dnsmasq_pid(cloud, network_id) == pid

    # A new subnet changes the command line: dnsmasq restarts with both ranges.
    assert cloud.client is not None
    await cloud.client.create_subnet(network_id, "198.51.100.0/24", project_id=cloud.project_id)
    await cloud.synced()
    new_pid = dnsmasq_pid(cloud, network_id)
    assert new_pid != pid
    command = cmdline(new_pid)
    assert "198.51.100.0,static,255.255.255.0" in command
    assert "203.0.113.0,static,255.255.255.0" in command


async def test_kill_9_dnsmasq_is_respawned(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(force_metadata=True)
    network_id, _ = await cloud.network("192.0.2.0/24")
    await cloud.boot(network_id)
    pid = dnsmasq_pid(cloud, network_id)
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    while True:
        new = cloud.agent.dnsmasq(network_id) if cloud.agent else None
        if new is not None and new.pid not in (None, pid) and new.is_active():
            break
        # A liveness bound (the monitor looks every interval): a busy machine is not a failure.
        assert time.monotonic() - start < 15.0, "dnsmasq was not respawned"
        await asyncio.sleep(0.05)
    print(f"dnsmasq respawned after {time.monotonic() - start:.2f} s")
    assert dnsmasq_pid(cloud, network_id) != pid
    vm = await cloud.boot(network_id)
    assert uuid_of(await curl_metadata(vm.namespace)) == vm.server_id


async def test_restart_adopts_dnsmasq_and_cleans_stale_namespaces(
    make_cloud: CloudFactory,
) -> None:
    cloud = await make_cloud(force_metadata=True)
    network_id, _ = await cloud.network("192.0.2.0/24")
    await cloud.synced()
    pid = dnsmasq_pid(cloud, network_id)
    await cloud.stop_agent()
    stale = cloud.namespace(str(uuid.uuid4()))
    linux.create_namespace(stale)
    await cloud.start_agent()
    assert dnsmasq_pid(cloud, network_id) == pid
    assert not linux.namespace_exists(stale)

    # A deleted network is torn down: namespace, dnsmasq, files.
    assert cloud.client is not None
    for port in await cloud.client.list_ports(network_id=network_id):
        await cloud.client.delete_port(port["id"])
    for subnet in await cloud.client.list_subnets(network_id):
        await cloud.client.delete_subnet(subnet["id"])
    await cloud.client.delete_network(network_id)
    await cloud.synced()
    assert not linux.namespace_exists(cloud.namespace(network_id))
    assert not linux.pid_alive(pid)
    assert not (cloud.base.state_path / "dhcp" / network_id).exists()


async def wait_active(cloud: DhcpCloud, network_id: str, timeout: float) -> bool:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dnsmasq = cloud.agent.dnsmasq(network_id) if cloud.agent else None
        if dnsmasq is not None and dnsmasq.is_active():
            return True
        await asyncio.sleep(0.1)
    return False


async def test_network_whose_dnsmasq_cannot_start_is_retried(make_cloud: CloudFactory) -> None:
    cloud = await make_cloud(force_metadata=True)
    good, _ = await cloud.network("192.0.2.0/24")
    assert cloud.client is not None
    net = await cloud.client.create_network(f"{cloud.prefix}bad", project_id=cloud.project_id)
    bad = net["id"]
    cloud.networks.append(bad)
    blocker = cloud.base.state_path / "dhcp" / bad / "leases"
    blocker.mkdir(parents=True)  # dnsmasq cannot open a directory as its lease file
    await cloud.client.create_subnet(bad, "198.51.100.0/24", project_id=cloud.project_id)
    await cloud.synced()
    assert cloud.agent is not None and cloud.agent.dnsmasq(bad) is None
    assert await wait_active(cloud, good, 1.0)
    vm = await cloud.boot(good)  # the other network keeps working
    assert uuid_of(await curl_metadata(vm.namespace)) == vm.server_id
    blocker.rmdir()
    assert await wait_active(cloud, bad, 15.0)  # retried with backoff (1, 2, 4 s ...)


async def test_admin_api_down_pauses_then_resyncs(make_cloud: CloudFactory) -> None:
    from cloudmeta.inventory import network_ops
    from cloudmeta.inventory.specs import PortCreate

    cloud = await make_cloud(force_metadata=True)
    network_id, _ = await cloud.network("203.0.113.0/24")
    pid = dnsmasq_pid(cloud, network_id)
    await cloud.stop_admin()
    assert cloud.store is not None
    spec = PortCreate(network_id=network_id, mac_address="fa:16:3e:0c:0d:0e")
    await cloud.store.transact(lambda tx: network_ops.create_port(tx, spec))
    await asyncio.sleep(1.0)  # the agent's feed fails and backs off meanwhile
    await cloud.start_admin()
    await cloud.synced()
    hosts = (cloud.base.state_path / "dhcp" / network_id / "host").read_text()
    assert "fa:16:3e:0c:0d:0e," in hosts
    assert dnsmasq_pid(cloud, network_id) == pid


async def test_exit_action_is_the_monitors_alone(make_cloud: CloudFactory) -> None:
    """With ``check_child_processes_action = exit`` a dead proxy is not respawned behind the
    ProcessMonitor's back: the monitor alone decides (here: the exit callback runs)."""
    cloud = await make_cloud(
        force_metadata=True,
        metadata_proxy_mode="process",
        check_child_processes_action="exit",
        check_child_processes_interval=0.2,
    )
    assert cloud.monitor is not None and cloud.proxies is not None
    exits: list[str] = []
    cloud.monitor.on_exit = lambda manager: exits.append(manager.service)  # not SIGTERM to us
    network_id, _ = await cloud.network("192.0.2.0/24")
    await cloud.boot(network_id)
    namespace = cloud.namespace(network_id)
    pid = cloud.proxies.pids()[namespace]
    os.kill(pid, signal.SIGKILL)
    # The monitor calls the exit callback on each pass that finds the proxy dead: three calls
    # are two more passes of the monitor (and of the agent's retry loop, which runs as often)
    # in which nothing respawned it.
    start = time.monotonic()
    while exits.count("metadata-proxy") < 3:
        assert time.monotonic() - start < 10.0, exits  # a liveness bound (passes: 0.2 s)
        await asyncio.sleep(0.05)
    assert cloud.proxies.pids().get(namespace) in (None, pid)
    assert not linux.pid_alive(pid)


@pytest.mark.root
@pytest.mark.timeout(120)
async def test_more_ports_than_the_neighbour_table_holds_is_warned_once(
    make_cloud: CloudFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past the host's gc_thresh3 dnsmasq's offers are lost (its ARP-cache injection fails),
    which only dnsmasq's syslog would tell: the agent says it, once. The host's limit is not
    ours to lower, so the agent is shown a small one."""
    monkeypatch.setattr(linux, "neighbour_table_limit", lambda: 2)
    cloud = await make_cloud()
    network_id, _ = await cloud.network("192.0.2.0/24")
    await cloud.server(network_id)  # + the DHCP port: 2 ports, not more than the table holds
    await cloud.synced()
    assert "neighbour table holds" not in capsys.readouterr().out
    for _ in range(2):
        await cloud.server(network_id)
        await cloud.synced()
    assert capsys.readouterr().out.count("more ports served than the host's neighbour table") == 1
