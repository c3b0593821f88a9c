"""Port security (issue 8): an instance that takes another's IP, or IP and MAC, on the same
bridge gets nothing of the other's; the rules follow ports as they come and go."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable

import pytest
from dhcp_cloud import META_IP, DhcpCloud, Instance, start_cloud, uuid_of

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.dhcp.antispoof import PortSecurity
from cloudmeta.dhcp.model import FixedIp, Network, NetworkBundle, Port
from cloudmeta.linux.iptables import iptables_counters
from cloudmeta.linux.names import link_name


@pytest.fixture
async def cloud(make_config: Callable[..., Config]) -> AsyncIterator[DhcpCloud]:
    made = await start_cloud(make_config, force_metadata=True)
    try:
        yield made
    finally:
        await made.close()


async def fetch(vm: Instance, max_time: float = 3.0) -> tuple[int, str]:
    """(status, body) of meta_data.json from inside ``vm``; (0, '') when nothing answers."""
    argv = ["curl", "-s", "-m", f"{max_time:g}", "-o", "-", "-w", "\n%{http_code}"]
    argv.append(f"http://{META_IP}/openstack/latest/meta_data.json")
    result = await linux.run(argv, namespace=vm.namespace, check=False, timeout=max_time + 5)
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


async def rules(cloud: DhcpCloud) -> str:
    assert cloud.bridge_namespace is not None
    return await linux.list_ebtables(cloud.bridge_namespace)


async def assume(vm: Instance, ip: str, dhcp_ip: str, mac: str | None = None) -> None:
    """``vm`` drops its own address (and MAC) for ``ip`` (and ``mac``), keeps the metadata route."""
    await linux.flush_routes(vm.namespace, dev="eth0")
    for address in await linux.list_addresses(vm.namespace, "eth0"):
        if "." in address.cidr:
            await linux.delete_address(vm.namespace, "eth0", address.cidr)
    if mac:
        await linux.set_link(vm.namespace, "eth0", mac=mac)
    await linux.add_address(vm.namespace, "eth0", f"{ip}/24")
    await linux.add_route(vm.namespace, f"{META_IP}/32", via=dhcp_ip, dev="eth0")


@pytest.mark.root
@pytest.mark.timeout(120)
async def test_spoofed_ip_and_mac_get_nothing_of_the_victim(cloud: DhcpCloud) -> None:
    network_id, _ = await cloud.network("192.0.2.0/24")
    victim = await cloud.boot(network_id)
    attacker = await cloud.boot(network_id)
    for vm in (victim, attacker):
        status, body = await fetch(vm, max_time=10)
        assert (status, uuid_of(body)) == (200, vm.server_id)
    await linux.cleanup(pid_dir=cloud.dhclient_dir / attacker.namespace)  # no renewals
    dhcp_ip = "192.0.2.2"

    # The victim's IP with the attacker's own MAC: every frame is dropped at its bridge port.
    await assume(attacker, victim.ip, dhcp_ip)
    status, body = await fetch(attacker)
    assert victim.server_id not in body and status in (0, 404), (status, body)
    assert uuid_of((await fetch(victim, max_time=10))[1]) == victim.server_id

    # The victim's IP and MAC: dropped before the bridge learns the MAC, so the victim's own
    # answers do not reach the attacker's port either.
    await assume(attacker, victim.ip, dhcp_ip, mac=victim.mac)
    status, body = await fetch(attacker)
    assert victim.server_id not in body and status in (0, 404), (status, body)
    for _ in range(3):
        status, body = await fetch(victim, max_time=10)
        assert (status, uuid_of(body)) == (200, victim.server_id)


@pytest.mark.root
@pytest.mark.timeout(120)
async def test_rules_follow_new_and_deleted_ports(cloud: DhcpCloud) -> None:
    assert cloud.client is not None
    network_id, _ = await cloud.network("192.0.2.0/24")
    server_id, port = await cloud.server(network_id)
    await cloud.synced()
    chain = "cm-" + link_name(cloud.base.device_prefix, "tap", port["id"])
    listed = await rules(cloud)
    assert f"-i {chain[3:]} -j {chain}" in listed
    assert f"--ip-src {port['fixed_ips'][0]['ip_address']} -j ACCEPT" in listed
    assert "network:dhcp" not in listed and listed.count("-j DROP") == 1  # DHCP port trusted

    await cloud.client.delete_server(server_id)
    await cloud.synced()
    assert chain not in await rules(cloud)

    await cloud.client.delete_network(network_id)
    await cloud.synced()
    assert "cm-" not in await rules(cloud)


# IPv6 datagrams to all nodes (ff02::1) from inside an instance: flooded to every other port.
# Until the link-local address has passed DAD there is no source (EADDRNOTAVAIL): wait for it.
_MULTICAST = """
import errno, socket, sys, time
sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
sent, deadline = 0, time.monotonic() + 20
while sent < int(sys.argv[1]):
    try:
        sock.sendto(b"cmt", ("ff02::1", 9, 0, socket.if_nametoindex("eth0")))
        sent += 1
    except OSError as exc:
        if exc.errno != errno.EADDRNOTAVAIL or time.monotonic() > deadline:
            raise
        time.sleep(0.1)
"""


async def _nd_guard_passes(namespace: str) -> int:
    """Frames counted by the rules that lead into the neighbour-discovery guard, wherever a
    version of the agent hooks it (filter FORWARD before, raw PREROUTING now)."""
    total = 0
    for table, chain in (("filter", "FORWARD"), ("raw", "PREROUTING")):
        for counter in await iptables_counters(namespace, table, chain, ipv6=True):
            total += counter.packets if counter.rule.endswith("-j cloudmeta-nd") else 0
    return total


@pytest.mark.root
@pytest.mark.timeout(120)
async def test_a_flooded_frame_passes_the_nd_guard_once(cloud: DhcpCloud) -> None:
    """A multicast from one instance is checked once as it enters the bridge, not once per
    port it is flooded to: in FORWARD (br_netfilter runs it per delivered copy) a storm of
    instances walked every port's rules for every copy (boot storm, bench/README.md)."""
    assert cloud.bridge_namespace is not None
    network_id, _ = await cloud.network("192.0.2.0/24")
    sender, *_ = [await cloud.boot(network_id) for _ in range(4)]  # + the DHCP port: 4 copies
    frames = 50
    before = await _nd_guard_passes(cloud.bridge_namespace)
    argv = [sys.executable, "-c", _MULTICAST, str(frames)]
    await linux.run(argv, namespace=sender.namespace)
    passes = await _nd_guard_passes(cloud.bridge_namespace) - before
    # Each frame once (a few router solicitations or MLD reports may come in between).
    assert frames <= passes < 2 * frames, passes


async def test_bridges_on_the_host_write_no_rules() -> None:
    """Without a bridge namespace nothing is written (the host's tables are not ours)."""
    security = PortSecurity(None, "cmt-")
    vm = Port("p1", "n1", "fa:16:3e:00:00:05", (FixedIp("s", "192.0.2.5"),), "compute:nova")
    await security.update(NetworkBundle(Network("n1"), ports=(vm,)))  # would raise if it ran
    assert not security.enabled
