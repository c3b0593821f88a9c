"""Scenario ``boot-storm-<N>``: N instance namespaces boot at once against the real DHCP agent
(``cloudmeta dhcp-agent``: dnsmasq + inline proxy) and ``cloudmeta api``, on one network up to
``Settings.storm_per_network`` instances (200) and on as many networks as N needs beyond (the same
CIDR on each, as tenants' networks overlap: a /24 holds 253 hosts, a Linux bridge 1 024 ports).
The bridges and their veth ends live in the bench's own bridge namespace, never on the host.

Each instance runs the safe ``dhclient`` (``cloudmeta.linux.run_dhclient``: option 121 brings
the 169.254.169.254 route) and then cloud-init's OpenStack datasource request sequence, one
``curl`` (one connection) per request, all of an instance's curls in one ``ip netns exec sh``
so that client start-up does not dominate. Measured: time from the first
dhclient until every instance has its data, failures, p50/p99 per request (curl's own
``time_total``). ``boot-storm-cloud-init-<N>`` does the same with the real crawl
(``/usr/bin/python3``, cloudinit's ``read_metadata_service``, EC2 half included).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import META_IP, NAME_PREFIX, Row, Settings, need_tools, percentile
from bench.services import Api, Service, start_api

# What cloud-init's DataSourceOpenStack asks, in order: wait_for_metadata_service, then
# _find_working_version, then the files of the newest version it knows (2018-08-27).
VERSION = "2018-08-27"
SEQUENCE = (
    "/openstack",
    "/openstack",
    f"/openstack/{VERSION}/meta_data.json",
    f"/openstack/{VERSION}/user_data",
    f"/openstack/{VERSION}/vendor_data.json",
    f"/openstack/{VERSION}/vendor_data2.json",
    f"/openstack/{VERSION}/network_data.json",
)
CRAWL = r"""
import json, sys, time
from cloudinit.sources import DataSourceOpenStack as ds
t = time.monotonic()
result = ds.read_metadata_service("http://169.254.169.254", timeout=10, retries=0)
print(json.dumps({"uuid": result["metadata"]["uuid"],
                  "ec2": result["ec2-metadata"]["instance-id"],
                  "seconds": time.monotonic() - t}))
"""
CIDR = "198.51.100.0/24"
SERVER_PARALLEL = 8


@dataclass
class Storm:
    """One bench cloud: the API, the DHCP agent, and what was built (for cleanup)."""

    api: Api
    dhcp: Service
    tag: str
    project_id: str
    state: Path
    per_network: int
    raise_host_limits: bool = False
    networks: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"{NAME_PREFIX}{self.tag}-"

    @property
    def fabric(self) -> str:
        """The namespace of every network's bridge (the DHCP agent's ``bridge_namespace``)."""
        return f"{self.prefix}fabric"


async def run(settings: Settings, tmp: Path) -> list[Row]:
    return await _run(settings, tmp, settings.storm_sizes, crawl=True)


async def run_large(settings: Settings, tmp: Path) -> list[Row]:
    """``--only bootstorm-large``: the sizes up to 1 000 instances, how the time grows."""
    return await _run(settings, tmp, settings.storm_large_sizes, crawl=False)


async def _run(settings: Settings, tmp: Path, sizes: tuple[int, ...], *, crawl: bool) -> list[Row]:
    from cloudmeta import linux

    need_tools("dhclient", "dnsmasq", "curl")
    api = await start_api(tmp / "state")
    storm: Storm | None = None
    try:
        tag = secrets.token_hex(3)
        options = api.agent_options(
            namespace_prefix=f"{NAME_PREFIX}{tag}-",
            device_prefix="cmt-",
            bridge_namespace=f"{NAME_PREFIX}{tag}-fabric",
            enable_isolated_metadata=True,
            metadata_proxy_mode="inline",
            check_child_processes_interval=1.0,
        )
        project = await api.client.create_project(f"{NAME_PREFIX}{tag}")
        dhcp = Service("dhcp-agent", options, tmp / "state" / "dhcp-agent.log").start()
        storm = Storm(
            api, dhcp, tag, project["id"], tmp / "state", settings.storm_per_network,
            settings.raise_host_limits,
        )  # fmt: skip
        rows = [await _storm(storm, n, crawl=False) for n in sizes]
        if crawl:
            rows.append(await _storm(storm, settings.crawl_instances, crawl=True))
        return rows
    finally:
        if storm is not None:
            await storm.dhcp.stop()
            await linux.cleanup(
                namespaces=linux.list_namespaces(storm.prefix),
                pid_dir=storm.state / "external" / "pids",
            )
        await api.close()


async def _servers(storm: Storm, network_id: str, count: int) -> list[dict[str, Any]]:
    gate = asyncio.Semaphore(SERVER_PARALLEL)

    async def one(index: int) -> dict[str, Any]:
        async with gate:
            server = await storm.api.client.create_server(
                f"{storm.prefix}vm{index}",
                [{"network_id": network_id}],
                project_id=storm.project_id,
                user_data="I2Nsb3VkLWNvbmZpZwo=",
            )
            return dict(await storm.api.client.get_port(server["ports"][0]))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _synced(storm: Storm, network_id: str, macs: list[str], timeout: float = 120) -> None:  # noqa: ASYNC109
    """Until dnsmasq's host file knows every MAC and the proxy's namespace exists."""
    from cloudmeta import linux

    hosts = storm.state / "dhcp" / network_id / "host"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        storm.dhcp.check()
        known = hosts.read_text().lower() if hosts.exists() else ""
        if all(mac.lower() in known for mac in macs) and linux.namespace_exists(
            f"{storm.prefix}qdhcp-{network_id}"
        ):
            await asyncio.sleep(1.0)  # dnsmasq re-reads the file on the agent's SIGHUP
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the DHCP agent did not serve network {network_id} within {timeout} s")


# One curl per instance runs the sequence, one connection per request (``Connection: close``),
# as cloud-init opens a connection per request; one process per instance instead of one per
# request (a shell running 7 curls): on two cores a storm's client processes take the CPU the
# service needs, and 7 process starts per instance made the per-request figures the clients'.
_WRITE_OUT = "%{http_code} %{time_total} %{exitcode} %{time_connect}\\n"


async def _fetch_sequence(namespace: str, log: Path) -> list[tuple[bool, float]]:
    """(200?, curl's time_total in ms) per request of ``SEQUENCE``; a missing answer fails.

    Started with ``linux.spawn`` from a thread and awaited on a pidfd: uvloop's
    ``create_subprocess_exec`` blocks the loop until the child has exec'd, which on a busy
    run queue serialised a storm's clients (250 instances: ~35 s of the loop in that call, the
    storm's time then the client's, not the service's).
    """
    from cloudmeta.linux import LinuxError
    from cloudmeta.linux.execute import spawn, wait_exit

    urls = [f"http://{META_IP}{path}" for path in SEQUENCE]
    await asyncio.to_thread(log.unlink, missing_ok=True)
    argv = ["curl", "-s", "-m", "10", "-H", "Connection: close", "-w", _WRITE_OUT]
    for url in urls:
        argv += ["-o", "/dev/null", url]
    with contextlib.suppress(LinuxError):  # killed at 90 s: what it printed still counts
        proc = await asyncio.to_thread(spawn, argv, namespace=namespace, log_path=log)
        await wait_exit(proc, 90)
    answers: list[tuple[bool, float]] = []
    text = await asyncio.to_thread(log.read_text, errors="replace")
    for line in text.splitlines()[: len(urls)]:
        code, seconds = [*line.split(), "", ""][:2]
        answers.append((code == "200", float(seconds or 0) * 1000))
    return answers + [(False, 0.0)] * (len(urls) - len(answers))


async def _crawl(namespace: str) -> tuple[bool, float]:
    from cloudmeta import linux

    env = {"PATH": "/usr/bin:/bin", "NO_PROXY": "*"}
    result = await linux.run(
        ["/usr/bin/python3", "-c", CRAWL], namespace=namespace, check=False, timeout=60, env=env
    )
    try:
        data = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, 0.0
    return bool(data["uuid"] and data["ec2"]), float(data["seconds"]) * 1000


def kernel_drops() -> dict[str, int]:
    """Host-wide counters that tell a storm's lost packets apart (summed over CPUs):
    ``neigh_full``: a neighbour entry refused because the table (``gc_thresh3``, one table for
    every namespace on this kernel) was full, so dnsmasq's ARP-cache injection for an offer or
    an ARP answer failed; ``backlog``: frames dropped by a full per-CPU input backlog
    (``net.core.netdev_max_backlog``), where a frame flooded to a bridge's ports is queued."""
    lines = Path("/proc/net/stat/arp_cache").read_text().splitlines()
    column = lines[0].split().index("table_fulls")
    fulls = sum(int(line.split()[column], 16) for line in lines[1:] if line.strip())
    backlog = sum(
        int(line.split()[1], 16) for line in Path("/proc/net/softnet_stat").read_text().splitlines()
    )
    return {"neigh_full": fulls, "backlog": backlog}


_NEIGH = Path("/proc/sys/net/ipv4/neigh/default")


def neigh_limit() -> int:
    """``gc_thresh3``: above it no neighbour entry is made (the host's, for all namespaces)."""
    return int((_NEIGH / "gc_thresh3").read_text())


_BACKLOG = Path("/proc/sys/net/core/netdev_max_backlog")
STORM_BACKLOG = 16384  # frames per CPU's input queue (the kernel's default: 1 000)


@contextlib.contextmanager
def host_limits_for(entries: int) -> Iterator[dict[str, int]]:
    """The host-wide limits a storm of ``entries`` neighbour entries meets, raised for the
    block and then put back: gc_thresh2/3 (with headroom) and the per-CPU input backlog
    (veth and bridge frames queue there: a storm of 1 000 dropped ~280 000 frames at 1 000,
    SYNs among them). Yields what was changed (sysctl -> the value set)."""
    wanted = {
        _NEIGH / "gc_thresh3": entries * 4,  # first: gc_thresh2 may not exceed it
        _NEIGH / "gc_thresh2": entries * 2,
        _BACKLOG: STORM_BACKLOG,
    }
    saved = {path: int(path.read_text()) for path in wanted}
    if entries <= saved[_NEIGH / "gc_thresh2"]:  # a storm the host's own limits hold
        yield {}
        return
    changed = {path: value for path, value in wanted.items() if value > saved[path]}
    try:
        for path, value in changed.items():
            path.write_text(str(value))
        yield {path.name: value for path, value in changed.items()}
    finally:
        for path in reversed(list(changed)):
            path.write_text(str(saved[path]))


async def _storm(storm: Storm, count: int, *, crawl: bool) -> Row:
    from cloudmeta import linux

    client = storm.api.client
    run_tag = f"{'c' if crawl else 's'}{len(storm.networks)}"
    per = storm.per_network
    sizes = [min(per, count - low) for low in range(0, count, per)]
    networks: list[str] = []
    ports: list[dict[str, Any]] = []
    for size in sizes:
        net = await client.create_network(f"{storm.prefix}net", project_id=storm.project_id)
        storm.networks.append(net["id"])
        networks.append(net["id"])
        await client.create_subnet(net["id"], CIDR, project_id=storm.project_id)
        ports += await _servers(storm, net["id"], size)
    names = [f"{storm.prefix}{run_tag}-{i}" for i in range(count)]
    links = [f"cmt-{storm.tag}{run_tag}{i}" for i in range(count)]
    dirs = storm.state / "dhclient" / run_tag
    try:
        for network_id in networks:
            macs = [p["mac_address"] for p in ports if p["network_id"] == network_id]
            await _synced(storm, network_id, macs)
        for name, link, port in zip(names, links, ports, strict=True):
            linux.create_namespace(name)
            await linux.plug_veth(
                name, "eth0", mac=port["mac_address"], host_ifname=link,
                bridge=linux.bridge_name("cmt-", port["network_id"]),
                bridge_namespace=storm.fabric,
            )  # fmt: skip
        latencies: list[float] = []
        leases: list[float] = []  # seconds from the start until each instance's lease
        failed_leases: list[str] = []
        failed_requests = 0

        async def boot(namespace: str) -> None:
            nonlocal failed_requests
            try:
                await linux.run_dhclient(namespace, "eth0", state_dir=dirs / namespace, timeout=30)
            except linux.LinuxError as exc:
                failed_leases.append(str(exc))
                return
            leases.append(time.monotonic() - started)
            fetched = (
                [await _crawl(namespace)]
                if crawl
                else await _fetch_sequence(namespace, dirs / namespace / "fetch.log")
            )
            for ok, ms in fetched:
                latencies.append(ms)
                failed_requests += not ok

        for name in names:
            (dirs / name).mkdir(parents=True, exist_ok=True)
        needed = 2 * count  # the instance's entry and its DHCP namespace's
        with contextlib.ExitStack() as limits:
            raised = {}
            if storm.raise_host_limits:
                raised = limits.enter_context(host_limits_for(needed))
                if raised:
                    print(f"   host limits raised for this storm: {raised}", flush=True)
            if needed > neigh_limit():
                print(
                    f"   {count} instances need ~{needed} neighbour entries; this host's "
                    f"gc_thresh3 is {neigh_limit()} for all namespaces: offers and ARP answers "
                    "will be lost (--raise-host-limits raises it for the storm)",
                    flush=True,
                )
            limit_used = neigh_limit()
            drops = kernel_drops()
            started = time.monotonic()
            await asyncio.gather(*(boot(n) for n in names))
            seconds = time.monotonic() - started
            drops = {k: v - drops[k] for k, v in kernel_drops().items()}
        for problem in failed_leases[:3]:
            print(f"   {problem}", flush=True)
    finally:
        await linux.cleanup(namespaces=names, pid_dir=None)  # their veths go with them
        with contextlib.suppress(Exception):
            for port in ports:
                await client.delete_server(port["device_id"])
    name = f"boot-storm-cloud-init-{count}" if crawl else f"boot-storm-{count}"
    requests = len(latencies)
    lease_p50 = percentile(leases, 50) if leases else 0.0
    lease_last = max(leases, default=0.0)
    return Row(
        name,
        rps=None if crawl else requests / seconds,
        p50_ms=percentile(latencies, 50) if latencies else None,
        p99_ms=percentile(latencies, 99) if latencies else None,
        failures=len(failed_leases) + failed_requests,
        seconds=seconds,
        networks=len(networks),
        instances=count,
        note="p50/p99 per whole crawl (python3 + cloudinit)" if crawl else
        f"{len(SEQUENCE)} requests per instance, p50/p99 per request; "
        f"{len(networks)} network(s) of <= {per}; leases failed {len(failed_leases)}, "
        f"requests failed {failed_requests}; lease at p50 {lease_p50:.1f} s, "
        f"last {lease_last:.1f} s; neighbour table full {drops['neigh_full']}x "
        f"(gc_thresh3 {limit_used}, host-wide), backlog drops {drops['backlog']}"
        + (f"; raised for the storm: {raised}" if raised else ""),
    )  # fmt: skip
