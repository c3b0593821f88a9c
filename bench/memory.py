"""Scenario ``memory-dhcp-agent-inline-<K>``: PSS of ``cloudmeta dhcp-agent`` in inline mode
serving K networks (K = 0, then each of ``Settings.memory_sizes``: 1, 50, 100, 200, 250),
dnsmasq counted apart. The marginal cost at 1, 50 and 200 networks is the growth per network
over the next step (1 -> 50, 50 -> 100, 200 -> 250; ``report.marginal_pss``); 0 -> 1 is the
first network's one-time cost (the serving stack's lazy imports and first allocations).

This is the product's process (child process, ``CLOUDMETA_*`` variables) with isolated
metadata: each served network has its DHCP namespace, its dnsmasq, and an inline listener on
169.254.169.254:80 in the agent's own loop. Nothing else runs in that process, so its growth
per network is the cost of serving one more network. (The ``memory-<mode>-K`` rows of the chain
scenario sum the bench process, which has just run wrk: the heap that run freed is reused by
the next listeners, so the growth per network read 0 there.) PSS is read twice 1 s apart after
the listeners answer, once a second until two readings differ by less than 16 KiB (at most
15 s); the last one is kept.

Then the same with ``metadata_workers = 2`` (``memory-dhcp-agent-w2-inline-K``, at
``Settings.memory_worker_sizes``): the agent starts an inline worker process that opens its own
listener in every served namespace; the worker is a child of the agent, so its PSS is in the
cloudmeta sum (every descendant but dnsmasq), and the note says how many processes that sum has.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from bench.common import META_IP, BenchError, Row, Settings, need_tools, process_tree, pss_bytes
from bench.services import Service, start_api

CIDR = "203.0.113.0/24"
PARALLEL = 8
STABLE = 16 * 1024


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def split_pss(root: int) -> tuple[int, int, int, int]:
    """(PSS of cloudmeta's processes, PSS of the dnsmasq processes, how many dnsmasq, how many
    of cloudmeta's: the agent and its inline workers) under ``root``."""
    pids = process_tree(root)
    dnsmasq = [p for p in pids if _comm(p) == "dnsmasq"]
    ours = [p for p in pids if p not in dnsmasq]
    return pss_bytes(ours), pss_bytes(dnsmasq), len(dnsmasq), len(ours)


async def run(settings: Settings, tmp: Path) -> list[Row]:
    need_tools("dnsmasq", "curl")
    rows = await _series(settings.memory_sizes, tmp / "w1", 1)
    return rows + await _series(settings.memory_worker_sizes, tmp / "w2", 2)


async def _series(sizes: tuple[int, ...], tmp: Path, workers: int) -> list[Row]:
    """``cloudmeta dhcp-agent`` with ``metadata_workers = workers`` at 0 and ``sizes`` networks."""
    from cloudmeta import linux

    api = await start_api(tmp / "state")
    tag = secrets.token_hex(3)
    prefix = f"cmt-bench-{tag}-"
    dhcp: Service | None = None
    try:
        options = api.agent_options(
            namespace_prefix=prefix,
            device_prefix="cmt-",
            bridge_namespace=f"{prefix}fabric",
            enable_isolated_metadata=True,
            metadata_proxy_mode="inline",
            metadata_workers=workers,
            check_child_processes_interval=1.0,
        )
        project = (await api.client.create_project(f"cmt-bench-{tag}"))["id"]
        dhcp = Service("dhcp-agent", options, tmp / "state" / "dhcp-agent.log").start()
        assert dhcp.proc is not None
        async with asyncio.timeout(60):  # started and registered: its imports are done
            while not await api.client.list_agents():
                dhcp.check()
                await asyncio.sleep(0.2)
        name = f"memory-dhcp-agent-w{workers}-inline" if workers > 1 else "memory-dhcp-agent-inline"
        rows = [await _measure(dhcp, 0, name)]
        networks: list[str] = []
        gate = asyncio.Semaphore(PARALLEL)

        async def network() -> str:
            async with gate:
                net = await api.client.create_network(f"{prefix}net", project_id=project)
                await api.client.create_subnet(net["id"], CIDR, project_id=project)
                return str(net["id"])

        for k in sizes:
            networks += await asyncio.gather(*(network() for _ in range(k - len(networks))))
            await _served(dhcp, prefix, networks)
            rows.append(await _measure(dhcp, k, name))
        return rows
    finally:
        if dhcp is not None:
            await dhcp.stop()
        await linux.cleanup(
            namespaces=linux.list_namespaces(prefix),
            pid_dir=tmp / "state" / "external" / "pids",
        )
        await api.close()


async def _served(dhcp: Service, prefix: str, networks: list[str], timeout: float = 180) -> None:  # noqa: ASYNC109
    """Until every network's DHCP namespace answers on 169.254.169.254:80 (any HTTP status)."""
    from cloudmeta import linux

    argv = ["curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code}", f"http://{META_IP}/"]
    async with asyncio.timeout(timeout):
        for network_id in networks:
            namespace = f"{prefix}qdhcp-{network_id}"
            while True:
                dhcp.check()
                if linux.namespace_exists(namespace):
                    result = await linux.run(argv, namespace=namespace, check=False)
                    if result.stdout.strip() not in ("", "000"):
                        break
                await asyncio.sleep(0.2)


async def _measure(dhcp: Service, k: int, name: str) -> Row:
    assert dhcp.proc is not None
    ours, dnsmasq, count, processes = split_pss(dhcp.proc.pid)
    for _ in range(15):
        await asyncio.sleep(1.0)
        last = ours
        ours, dnsmasq, count, processes = split_pss(dhcp.proc.pid)
        if abs(ours - last) < STABLE:
            break
    if count != k:
        raise BenchError(f"{count} dnsmasq processes for {k} networks")
    return Row(
        f"{name}-{k}",
        pss_bytes=ours,
        networks=k,
        note=(
            f"{processes} cloudmeta processes; dnsmasq apart: {count} processes, "
            f"{dnsmasq / 1024 / 1024:.1f} MiB PSS"
        ),
    )
