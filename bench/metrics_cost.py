"""Scenario ``metrics``: what the Prometheus metrics cost the inline chain, on against off.

One inventory (one SQLite file), two ``cloudmeta api`` processes on it: one with
``metrics_enabled = true`` (the default), one with ``false``. The same instance namespace and
inline listener are then benched through an agent of the same setting, in alternating rounds
(on, off, on, off, ...) so that a neighbour's load hits both sides alike; each side's figure is
the median of its rounds.

On a shared 2-core machine req/s swings with the neighbours' load far more than 5%, so each
round also reads the CPU seconds the serving processes spent (this process, which hosts the
agent and the inline listener, plus the API process and its workers, from ``/proc``) per
request answered: that figure moves much less with contention, and its on/off ratio is the
metrics' cost. Off still counts cache hits and the other cheap counters (a few
increments per request): what ``metrics_enabled`` removes is the per-hop request counting and
latency histograms, the metrics' per-request cost.
"""

from __future__ import annotations

import asyncio
import os
import statistics
from pathlib import Path
from typing import Any

from bench.chain import _bench_chain, _build, _ready
from bench.common import META_IP, META_PATH, Row, Settings, cpu_seconds, need_tools, wrk
from bench.services import config_of, start_api

ROUNDS = 8  # per side; many short rounds make the median robust to a neighbour's burst
ROUND_SECONDS = 5.0


async def run(settings: Settings, tmp: Path) -> list[Row]:
    from harness import Chain, curl  # type: ignore[import-not-found]  # bench.chain's path

    from cloudmeta.adminclient import AdminClient

    need_tools("wrk")
    state = tmp / "state"
    on = await start_api(state, metrics=True)
    off = await start_api(state, metrics=False)
    chain: Any = None
    try:
        options = on.agent_options(namespace_prefix="cmt-", device_prefix="cmt-")
        chain = _bench_chain(Chain)(config=config_of(options))
        chain.client = AdminClient(chain.config)
        chain.project_id = (await chain.client.create_project(f"cmt-{chain.tag}"))["id"]
        [(dhcp, network_id, instance)] = await _build(chain, 1)
        figures: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for index in range(1 if settings.quick else ROUNDS):
            # ABBA: neither side always goes first after the other's round.
            order = ((True, on), (False, off)) if index % 2 == 0 else ((False, off), (True, on))
            for enabled, api in order:
                agent_options = {
                    **options,
                    "nova_metadata_port": api.metadata_port,
                    "metrics_enabled": enabled,
                }
                pids = _pids(api.service.proc.pid)
                figures[enabled].append(
                    await _round(settings, agent_options, dhcp, network_id, instance, curl, pids)
                )
        rows = [_row(enabled, runs) for enabled, runs in figures.items()]
        rows[0].note += f"; added_us/request={_added_us(tmp):.1f} (in-process, per request)"
        return rows
    finally:
        if chain is not None:
            await chain.close()
        await off.close()
        await on.close()


async def _round(
    settings: Settings,
    options: dict[str, Any],
    dhcp: str,
    network_id: str,
    instance: str,
    curl: Any,
    pids: list[int],
) -> dict[str, float]:
    """One wrk run through a fresh agent and inline listener of the given setting."""
    from cloudmeta.adminclient import AdminClient
    from cloudmeta.agent import MetadataAgent
    from cloudmeta.proxy import MetadataProxyManager

    config = config_of({**options, "metadata_proxy_mode": "inline"})
    client = AdminClient(config)
    agent = MetadataAgent(config, client)
    await agent.start(unix_socket=False)
    manager = MetadataProxyManager(config, inline=agent.inline)
    try:
        await manager.ensure(dhcp, network_id=network_id, bind=(META_IP, 80))
        await _ready(curl, instance)
        url = f"http://{META_IP}{META_PATH}"
        await wrk(url, 1, namespace=instance)  # warm: caches, pools, the API's workers
        seconds = min(settings.duration, ROUND_SECONDS)
        before = cpu_seconds(pids)
        figures = await wrk(url, seconds, namespace=instance)
        spent = cpu_seconds(pids) - before
        answered = figures["rps"] * max(1, round(seconds))
        figures["cpu_us"] = spent / answered * 1e6 if answered else 0.0
        return figures
    finally:
        await manager.close()
        await agent.stop()
        await client.close()
        await asyncio.sleep(0.2)


_ADDED = """
import asyncio, os, sys, time
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from cloudmeta import metrics

async def answer(request, *args):
    return web.Response(body=b"{}")

async def main():
    hops = int(sys.argv[1])
    counted = answer
    for hop in ("api", "agent", "proxy")[:hops]:
        counted = metrics.instrument(counted, hop, "inline")
    request = make_mocked_request("GET", "/openstack/latest/meta_data.json")
    request.path  # computed by the hops' own code anyway
    best = {}
    for name, handler in (("off", answer), ("on", counted)):
        runs = []
        for _ in range(5):
            start = time.process_time()
            for _ in range(20000):
                await handler(request)
                if name == "on":
                    metrics.PORT_CACHE_HIT.inc()
            runs.append((time.process_time() - start) / 20000)
        best[name] = min(runs)
    print((best["on"] - best["off"]) * 1e6)

asyncio.run(main())
"""


def _added_us(tmp: Path) -> float:
    """The metrics' own CPU per chain request, measured in-process without the network's
    noise: the proxy and agent hops (+ a port-cache hit) in memory, as in this process, and
    the API hop (+ a document-cache hit) in a worker's multiprocess mode, as half of the
    API's answers are (two processes serve the port)."""
    import subprocess
    import sys

    def run(hops: int, env: dict[str, str] | None = None) -> float:
        out = subprocess.run(
            [sys.executable, "-c", _ADDED, str(hops)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return float(out.stdout.strip())

    directory = tmp / "cmt-multiproc"
    directory.mkdir(exist_ok=True)
    local = run(2)  # proxy + agent (+ a port-cache hit)
    parent_api = run(1)
    worker_api = run(1, {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)})
    return local + (parent_api + worker_api) / 2


def _pids(api_pid: int) -> list[int]:
    """This process (agent, inline listener), the API process and its metadata workers."""
    try:
        children = Path(f"/proc/{api_pid}/task/{api_pid}/children").read_text().split()
    except OSError:
        children = []
    return [os.getpid(), api_pid, *(int(pid) for pid in children)]


def _row(enabled: bool, runs: list[dict[str, float]]) -> Row:
    rps = [run["rps"] for run in runs]
    cpu = [run["cpu_us"] for run in runs]
    return Row(
        f"chain-inline-metrics-{'on' if enabled else 'off'}",
        rps=statistics.median(rps),
        p50_ms=statistics.median(run["p50_ms"] for run in runs),
        p99_ms=statistics.median(run["p99_ms"] for run in runs),
        failures=int(sum(run["failures"] for run in runs)),
        networks=1,
        note=f"cpu_us/request={statistics.median(cpu):.1f}; rounds req/s: "
        + " ".join(f"{r:.0f}" for r in rps)
        + "; rounds cpu_us/request: "
        + " ".join(f"{c:.1f}" for c in cpu),
    )
