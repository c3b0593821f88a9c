"""Benchmark: instance -> proxy -> agent -> metadata API, per proxy mode, at K networks.

    .venv/bin/python bench/chain.py [--duration 5] [--sizes 1,50,200]
                                    [--modes inline,haproxy,process] [--process-max 50]

Builds K networks (same admin API inventory, one "DHCP" namespace hosting the proxy and one
instance namespace each, veth + host route to 169.254.169.254), runs the admin and metadata
APIs in a child process on free loopback ports, and this process as the metadata agent (unix
socket + inline listeners). For each mode and each K it ensures the proxies, drives
``meta_data.json`` with ``wrk`` (64 connections, from inside an instance namespace) and prints
req/s, p50, p99 and the PSS (``/proc/<pid>/smaps_rollup``) of agent + proxies, then the marginal
memory per network. Root needed; everything made is named ``cmt-<hex>-...`` and removed.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "proxy"))

PATH = "/openstack/latest/meta_data.json"
SECRET = "cmt-bench-secret"
PROCESS_MODE_MAX = 50  # one Python process per network costs ~25 MB: K=200 would take ~5 GB


def _config(state: Path, **extra: Any) -> Any:
    from cloudmeta.config import Config

    return Config(
        state_path=state,
        namespace_prefix="cmt-",
        device_prefix="cmt-",
        log_format="json",
        metadata_proxy_shared_secret=SECRET,
        **extra,
    )


# -- the API child ---------------------------------------------------------------------------


async def _serve_api(state: Path) -> None:
    from aiohttp import web

    from cloudmeta.api.admin import build_admin_app
    from cloudmeta.api.metadata import make_metadata_app
    from cloudmeta.inventory import Store

    config = _config(state)
    store = await Store.open(config)
    ports = []
    for app in (build_admin_app(config, store), make_metadata_app(config, store)):
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        ports.append(runner.addresses[0][1])
    print("PORTS " + json.dumps({"admin": ports[0], "metadata": ports[1]}), flush=True)
    await asyncio.Event().wait()


# -- measuring -------------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    match = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


async def wrk(namespace: str, duration: float, connections: int) -> dict[str, float]:
    from cloudmeta import linux

    argv = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration:g}s",
        "--latency",
        f"http://169.254.169.254{PATH}",
    ]
    out = (await linux.run(argv, namespace=namespace, timeout=duration + 30)).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": float(errors.group(1)) if errors else 0}


async def _ready(namespace: str) -> None:
    from harness import curl

    for _ in range(100):
        status, _body = await curl(namespace, max_time=2)
        if status == 200:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no 200 from {namespace}")


# -- the run ---------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    from harness import META_IP, Chain

    from cloudmeta.adminclient import AdminClient
    from cloudmeta.agent import MetadataAgent
    from cloudmeta.config import ProxyMode
    from cloudmeta.proxy import MetadataProxyManager

    sizes = sorted(int(k) for k in args.sizes.split(","))
    state = Path(tempfile.mkdtemp(prefix="cmt-bench-"))
    api = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve-api", str(state), stdout=subprocess.PIPE
    )
    chain: Chain | None = None
    try:
        assert api.stdout is not None
        line = b""
        while not line.startswith(b"PORTS "):
            line = await api.stdout.readline()
            if not line:
                raise RuntimeError("the API child died; see its output above")
        ports = json.loads(line[6:])
        base = dict(
            admin_url=f"http://127.0.0.1:{ports['admin']}", nova_metadata_port=ports["metadata"]
        )
        chain = Chain(config=_config(state, **base))
        chain.client = AdminClient(chain.config)
        chain.project_id = (await chain.client.create_project(f"cmt-{chain.tag}"))["id"]
        started = time.monotonic()
        nets = []
        for index in range(sizes[-1]):
            network_id, _ = await chain.network("192.0.2.0/24")
            dhcp = await chain.gateway_namespace(chain.name("d", index))
            instance = await chain.instance(index, network_id, "192.0.2.10", dhcp, "192.0.2.2")
            nets.append((dhcp, network_id, instance))
        print(f"built {len(nets)} networks in {time.monotonic() - started:.1f} s", flush=True)
        results: dict[str, dict[int, dict[str, float]]] = {}
        header = f"{'mode':8} {'K':>4} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'PSS MiB':>8}"
        print(header, flush=True)
        for mode in [ProxyMode(m) for m in args.modes.split(",")]:
            config = _config(state, metadata_proxy_mode=mode, **base)
            agent = MetadataAgent(config, chain.client)
            await agent.start(unix_socket=mode is not ProxyMode.INLINE)
            manager = MetadataProxyManager(
                config, inline=agent.inline if mode is ProxyMode.INLINE else None
            )
            done = 0
            try:
                for k in sizes:
                    if mode is ProxyMode.PROCESS and k > args.process_max:
                        print(f"{mode.value:8} {k:>4} skipped (--process-max)", flush=True)
                        continue
                    for dhcp, network_id, _inst in nets[done:k]:
                        await manager.ensure(dhcp, network_id=network_id, bind=(META_IP, 80))
                    done = k
                    probe = nets[k - 1][2].namespace
                    await _ready(probe)
                    await _ready(nets[0][2].namespace)
                    await asyncio.sleep(0.5)
                    gc.collect()
                    figures = await wrk(probe, args.duration, args.connections)
                    pids = [os.getpid(), *manager.pids().values()]
                    figures["pss_kib"] = float(sum(pss_kib(pid) for pid in pids))
                    results.setdefault(mode.value, {})[k] = figures
                    print(
                        f"{mode.value:8} {k:>4} {figures['rps']:>8.0f} {figures['p50']:>7.2f} "
                        f"{figures['p99']:>7.2f} {figures['pss_kib'] / 1024:>8.1f}"
                        + (f"  non-2xx {figures['non2xx']:.0f}" if figures["non2xx"] else ""),
                        flush=True,
                    )
            finally:
                await manager.close()
                await agent.stop()
        _summary(results)
    finally:
        if chain is not None:
            await chain.close()
        api.terminate()
        await api.wait()
        shutil.rmtree(state, ignore_errors=True)


def _summary(results: dict[str, dict[int, dict[str, float]]]) -> None:
    print("\nmarginal memory per network (PSS growth / networks added):")
    for mode, by_k in results.items():
        ks = sorted(by_k)
        for low, high in itertools.pairwise(ks):
            per = (by_k[high]["pss_kib"] - by_k[low]["pss_kib"]) / (high - low)
            print(f"  {mode:8} K {low:>3} -> {high:>3}: {per:8.1f} KiB/network")
    if "inline" in results and "haproxy" in results:
        for k in sorted(set(results["inline"]) & set(results["haproxy"])):
            inline, haproxy = results["inline"][k], results["haproxy"][k]
            print(
                f"K={k}: inline/haproxy req/s {inline['rps'] / haproxy['rps']:.2f}x "
                f"(target >= 2x); inline p99 {inline['p99']:.2f} ms (target <= 25 ms)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sizes", default="1,50,200")
    parser.add_argument("--modes", default="inline,haproxy,process")
    parser.add_argument("--process-max", type=int, default=PROCESS_MODE_MAX)
    parser.add_argument("--serve-api", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    from cloudmeta.logs import setup_logging

    setup_logging(False, "json")
    if args.serve_api:
        uvloop.run(_serve_api(args.serve_api))
    else:
        uvloop.run(run(args))


if __name__ == "__main__":
    main()
