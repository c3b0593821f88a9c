"""``metadata_workers = 2`` in the all-in-one (inline mode): a worker process beside the
all-in-one's own listens with SO_REUSEPORT in every namespace the all-in-one serves, and both
answer the instances, with their own caches kept true to the same invalidation.

The all-in-one runs in this process (:func:`running_services`, what ``cloudmeta all-in-one``
runs) with its DHCP and L3 agents; instances are namespaces on the networks' bridges with a
lease from dnsmasq. Which process served is read from what ships: ``ss`` inside the namespace
(who holds a listening socket) and the metrics (the all-in-one's own request counter in this
process, and the admin API's scrape, which sums the worker's multiprocess files in).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.linux.names import bridge_name
from cloudmeta.metrics import HopRecorder, recorder
from cloudmeta.services import Running, ServiceSet, running_services
from support.scrape import scrape, settled, total

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

TOKEN = "cmt-admin-token"
META = "/openstack/latest/meta_data.json"
REQUESTS = "cloudmeta_metadata_requests_total"
CONNECTIONS = 64  # fresh connections per round: all on one process has odds 2**-63
ALL_IN_ONE = ServiceSet(api=True, metadata_agent=True, dhcp=True, l3=True)

# Run inside an instance namespace: one new connection per request (the kernel picks a
# process per connection), every answer's status and body as JSON.
_CLIENT = """
import http.client, json, sys
path, count = sys.argv[1], int(sys.argv[2])
out = []
for _ in range(count):
    conn = http.client.HTTPConnection("169.254.169.254", 80, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        out.append([resp.status, resp.read().decode(errors="replace")])
    except OSError as exc:
        out.append([0, type(exc).__name__])
    finally:
        conn.close()
print(json.dumps(out))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Vm:
    namespace: str
    server_id: str
    ip: str


@dataclass
class Aio:
    config: Config
    running: Running
    client: AdminClient
    project_id: str
    tag: str
    vms: list[Vm] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return self.config.namespace_prefix

    def qdhcp(self, network_id: str) -> str:
        return f"{self.prefix}qdhcp-{network_id}"

    @property
    def worker_pids(self) -> list[int]:
        assert self.running.inline_workers is not None
        return self.running.inline_workers.pids()

    async def synced(self) -> None:
        """Until the DHCP and L3 agents applied every change so far (and so every worker
        follows their listeners: a publication returns once every worker answered)."""
        assert self.running.dhcp is not None and self.running.l3 is not None
        revision = await self.client.revision()
        await self.running.dhcp.wait_for_revision(revision)
        await self.running.l3.wait_for_revision(revision)

    async def network(self, cidr: str) -> tuple[str, str]:
        net = await self.client.create_network(f"{self.prefix}net", project_id=self.project_id)
        sub = await self.client.create_subnet(net["id"], cidr, project_id=self.project_id)
        return net["id"], sub["id"]

    async def server(self, network_id: str, ip: str) -> str:
        server = await self.client.create_server(
            f"{self.prefix}vm",
            [{"network_id": network_id, "fixed_ip": ip}],
            project_id=self.project_id,
            metadata={"role": "cmt"},
        )
        return str(server["id"])

    async def boot(self, network_id: str, ip: str) -> Vm:
        """A server with ``ip`` and a namespace with its MAC on the network's bridge (an
        unfiltered bridge port: the test may re-use the address for another port), leased."""
        server_id = await self.server(network_id, ip)
        [port] = await self.client.list_ports(device_id=server_id)
        await self.synced()
        index = len(self.vms)
        vm = Vm(f"{self.prefix}vm{index}", server_id, ip)
        self.vms.append(vm)
        linux.create_namespace(vm.namespace)
        await linux.plug_veth(
            vm.namespace,
            "eth0",
            mac=port["mac_address"],
            host_ifname=f"cmt-iw{self.tag}{index}",
            bridge=bridge_name(self.config.device_prefix, network_id),
            bridge_namespace=self.config.bridge_namespace,
        )
        await linux.run_dhclient(
            vm.namespace, "eth0", state_dir=self.config.state_path / "dhclient" / vm.namespace
        )
        return vm


@pytest.fixture
async def aio(make_config: Callable[..., Config]) -> AsyncIterator[Aio]:
    tag = secrets.token_hex(3)
    prefix = f"cmt-iw-{tag}-"
    admin_port, metadata_port = _free_port(), _free_port()
    config = make_config(
        admin_token=TOKEN,
        admin={"listen": "127.0.0.1", "port": admin_port},
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata_port},
        admin_url=f"http://127.0.0.1:{admin_port}",
        nova_metadata_port=metadata_port,
        namespace_prefix=prefix,
        bridge_namespace=f"{prefix}fabric",
        enable_isolated_metadata=True,
        metadata_proxy_mode="inline",
        metadata_workers=2,
    )
    pids = config.state_path / "external" / "pids"
    try:
        async with running_services(config, ALL_IN_ONE) as running, AdminClient(config) as client:
            project = await client.create_project(f"{prefix}p")
            yield Aio(config, running, client, project["id"], tag)
    finally:
        await linux.cleanup(
            namespaces=linux.list_namespaces(prefix),
            pid_dir=config.state_path / "dhclient",
        )
        await linux.cleanup(pid_dir=pids)
        for ns in linux.list_namespaces(prefix):  # pragma: no cover (cleanup failed)
            linux.delete_namespace(ns)


def _listening(out: str, address: str) -> set[int]:
    """The pids holding a listening socket on ``address`` in ``ss -Hltnp`` output."""
    pids: set[int] = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == address:
            pids.update(int(p) for p in re.findall(r"pid=(\d+)", line))
    return pids


async def listeners(namespace: str, address: str) -> set[int]:
    result = await linux.run(["ss", "-Hltnp"], namespace=namespace)
    return _listening(result.stdout, address)


async def ask(vm: Vm, path: str = META, count: int = CONNECTIONS) -> list[tuple[int, str]]:
    """``count`` requests from inside ``vm``, each on a new connection."""
    argv = [sys.executable, "-c", _CLIENT, path, str(count)]
    result = await linux.run(argv, namespace=vm.namespace, timeout=60)
    return [(status, body) for status, body in json.loads(result.stdout)]


def uuids(answers: list[tuple[int, str]]) -> set[Any]:
    return {json.loads(body)["uuid"] if status == 200 else status for status, body in answers}


def own_count() -> int:
    """Requests the inline listeners of THIS process (the all-in-one's) answered so far."""
    hop = recorder("proxy", "inline")
    assert isinstance(hop, HopRecorder)
    return sum(sum(by_status.values()) for by_status in hop.by_kind.values())


async def served_total(aio: Aio) -> float:
    """Inline requests answered by every process: the admin API's scrape (the worker's
    multiprocess files summed in, once its last flush is in)."""
    _, samples = await settled(f"{aio.config.admin_url}/metrics", REQUESTS)
    return total(samples, REQUESTS, hop="proxy", mode="inline")


async def shares(aio: Aio, work: Callable[[], Any]) -> tuple[int, int]:
    """(answered by the all-in-one, answered by the worker) while ``work`` runs."""
    own, every = own_count(), await served_total(aio)
    await work()
    mine = own_count() - own
    return mine, int(await served_total(aio) - every) - mine


async def port_caches_at(aio: Aio, revision: int) -> None:
    """Until every process's port cache applied ``revision`` (the scrape's gauge is the
    minimum over the processes); a liveness bound, far above the feed's long poll."""
    deadline = time.monotonic() + 30.0
    while True:
        _, samples = await scrape(f"{aio.config.admin_url}/metrics")
        applied = [
            v
            for (name, labels), v in samples.items()
            if name == "cloudmeta_change_feed_revision" and ("consumer", "port-cache") in labels
        ]
        if applied and min(applied) >= revision:
            return
        assert time.monotonic() < deadline, f"port caches at {applied}, not {revision}"
        await asyncio.sleep(0.1)


async def test_the_worker_serves_every_namespace_with_the_same_answers(aio: Aio) -> None:
    [worker] = aio.worker_pids
    parent = os.getpid()
    # Two networks with the same addresses: only the netns cookie tells them apart.
    net_a, _ = await aio.network("192.0.2.0/24")
    net_b, _ = await aio.network("192.0.2.0/24")
    vm_a = await aio.boot(net_a, "192.0.2.50")
    vm_b = await aio.boot(net_b, "192.0.2.50")
    for network in (net_a, net_b):
        held = await listeners(aio.qdhcp(network), "169.254.169.254:80")
        assert held == {parent, worker}, held

    async def both() -> None:
        assert uuids(await ask(vm_a)) == {vm_a.server_id}
        assert uuids(await ask(vm_b)) == {vm_b.server_id}

    mine, theirs = await shares(aio, both)
    assert mine + theirs == 2 * CONNECTIONS
    assert mine > 0 and theirs > 0, (mine, theirs)

    # A document change is seen by the next request, whichever process gets it.
    await aio.client.update_server(vm_a.server_id, metadata={"role": "cmt-db"})
    answers = await ask(vm_a)
    assert {json.loads(body)["meta"]["role"] for _, body in answers} == {"cmt-db"}

    # A port change: vm_b's address now belongs to another server. Every process cached the
    # old owner (both answered vm_b); once each one's feed applied the change, none may
    # answer for the deleted server.
    await aio.client.delete_server(vm_b.server_id)
    successor = await aio.server(net_b, "192.0.2.50")
    await port_caches_at(aio, await aio.client.revision())
    mine, theirs = await shares(aio, lambda: _expect(vm_b, {successor}))
    assert mine > 0 and theirs > 0, (mine, theirs)

    # A killed worker is respawned with every namespace, and serves again.
    assert aio.running.inline_workers is not None
    os.kill(worker, signal.SIGKILL)
    async with asyncio.timeout(60):
        await aio.running.inline_workers.wait_for(lambda pids: bool(pids) and worker not in pids)
    [respawned] = aio.worker_pids
    for network in (net_a, net_b):
        held = await listeners(aio.qdhcp(network), "169.254.169.254:80")
        assert held == {parent, respawned}, held
    mine, theirs = await shares(aio, lambda: _expect(vm_a, {vm_a.server_id}))
    assert mine > 0 and theirs > 0, (mine, theirs)


async def _expect(vm: Vm, wanted: set[str]) -> None:
    assert uuids(await ask(vm)) == wanted


async def test_a_removed_namespace_has_no_listener_in_any_process(aio: Aio) -> None:
    [worker] = aio.worker_pids
    parent = os.getpid()
    net_a, subnet_a = await aio.network("198.51.100.0/24")
    net_b, _ = await aio.network("203.0.113.0/24")
    await aio.synced()
    vm_b = await aio.boot(net_b, "203.0.113.20")
    for network in (net_a, net_b):
        held = await listeners(aio.qdhcp(network), "169.254.169.254:80")
        assert held == {parent, worker}, held

    # The product's path: a router on the subnet withdraws the isolated network's proxy (in
    # every process), and the router's namespace is served by every process instead.
    router = await aio.client.create_router(f"{aio.prefix}r", project_id=aio.project_id)
    await aio.client.add_router_interface(router["id"], subnet_a)
    await aio.synced()
    assert await listeners(aio.qdhcp(net_a), "169.254.169.254:80") == set()
    qrouter = f"{aio.prefix}qrouter-{router['id']}"
    assert await listeners(qrouter, "0.0.0.0:9697") == {parent, worker}

    # The manager's remove (what the agents call): when it returns, no process listens and a
    # new connection is refused.
    assert aio.running.proxies is not None
    await aio.running.proxies.remove(aio.qdhcp(net_b))
    assert await listeners(aio.qdhcp(net_b), "169.254.169.254:80") == set()
    assert set(await ask(vm_b, count=8)) == {(0, "ConnectionRefusedError")}


def test_listening_reads_every_process_of_a_reuse_port_group() -> None:
    out = (
        'LISTEN 0 1024 169.254.169.254:80 0.0.0.0:* users:(("python3",pid=10,fd=20))\n'
        'LISTEN 0 1024 169.254.169.254:80 0.0.0.0:* users:(("python3",pid=11,fd=9))\n'
        'LISTEN 0 1024 0.0.0.0:9697 0.0.0.0:* users:(("python3",pid=12,fd=9))\n'
    )
    assert _listening(out, "169.254.169.254:80") == {10, 11}
    assert _listening(out, "198.51.100.1:80") == set()
