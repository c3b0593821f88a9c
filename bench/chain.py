"""Scenarios ``chain-<mode>`` and ``memory-<mode>-<K>``: instance namespace -> proxy -> agent
-> metadata API for each proxy mode, and the PSS of agent + proxies at K served networks.
``chain-v6`` (:func:`run_v6`): the inline chain over IPv6 beside the same chain over IPv4,
measured in turns (ABBA). wrk cannot take a zone (``%eth0``) in its URL, so it asks the same
inline listener on one more address, ``2001:db8::a9fe``, on-link from an instance whose only
IPv6 address is its link-local one: the peer is link-local and found by its SYN's MAC, as
on ``[fe80::a9fe:a9fe%eth0]`` (which curl checks first).

The API is ``cloudmeta api`` (child process); the metadata agent and the proxy manager are the
product's classes in this process, as ``start_embedded`` runs them in the DHCP agent. Each
network gets a "DHCP" namespace with 169.254.169.254 on its loopback (hosting the proxy) and an
instance namespace behind a veth (``tests/proxy/harness.py``, shared with the proxy tests).
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
from pathlib import Path
from typing import Any

from bench.common import (
    META_IP,
    META_PATH,
    Row,
    Settings,
    cpu_seconds,
    need_tools,
    process_tree,
    pss_bytes,
    wrk,
    wrk_row,
)
from bench.services import config_of, start_api

# The chain is the tests' harness (tests/proxy/harness.py), which imports tests/support.
_TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(_TESTS / "proxy"), str(_TESTS)]

MODES = ("inline", "haproxy", "process")
BUILD_PARALLEL = 8
META_V6 = "fe80::a9fe:a9fe"
WRK_V6 = "2001:db8::a9fe"  # the listener's extra address for wrk (see the module's docstring)


async def run(settings: Settings, tmp: Path) -> list[Row]:
    from harness import Chain, curl  # type: ignore[import-not-found]

    from cloudmeta.adminclient import AdminClient

    need_tools("wrk", "haproxy")
    api = await start_api(tmp / "state")
    chain: Any = None
    try:
        options = api.agent_options(namespace_prefix="cmt-", device_prefix="cmt-")
        chain = _bench_chain(Chain)(config=config_of(options))
        chain.client = AdminClient(chain.config)
        chain.project_id = (await chain.client.create_project(f"cmt-{chain.tag}"))["id"]
        nets = await _build(chain, max(settings.chain_sizes))
        rows: list[Row] = []
        for mode in MODES:
            rows += await _mode(settings, options, mode, nets, curl)
        return rows
    finally:
        if chain is not None:
            await chain.close()
        await api.close()


def _bench_chain(base: type) -> type:
    """The harness's Chain with ``cmt-bench-<hex>-`` namespaces (links stay <= 15 chars)."""

    class BenchChain(base):  # type: ignore[misc, valid-type]
        def name(self, kind: str, index: int) -> str:
            if kind == "g":  # the veth's end in the proxy's namespace
                return f"cmt-{self.tag}g{index}"
            return f"cmt-bench-{self.tag}-{kind}{index}"

    return BenchChain


async def _build(chain: Any, count: int) -> list[tuple[str, str, str]]:
    """``count`` networks: (proxy namespace, network id, instance namespace) each."""
    gate = asyncio.Semaphore(BUILD_PARALLEL)

    async def one(index: int) -> tuple[str, str, str]:
        async with gate:
            network_id, _ = await chain.network("192.0.2.0/24")
            dhcp = await chain.gateway_namespace(chain.name("d", index))
            inst = await chain.instance(index, network_id, "192.0.2.10", dhcp, "192.0.2.2")
            return dhcp, network_id, inst.namespace

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def _ready(curl: Any, namespace: str) -> None:
    for _ in range(100):
        status, _body = await curl(namespace, META_PATH, max_time=2)
        if status == 200:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no 200 from the proxy seen from {namespace}")


async def _mode(
    settings: Settings, options: dict[str, Any], mode: str, nets: list[Any], curl: Any
) -> list[Row]:
    from harness import META_IP as HARNESS_META_IP

    from cloudmeta.adminclient import AdminClient
    from cloudmeta.agent import MetadataAgent
    from cloudmeta.config import ProxyMode
    from cloudmeta.proxy import MetadataProxyManager

    assert HARNESS_META_IP == META_IP
    config = config_of({**options, "metadata_proxy_mode": mode})
    client = AdminClient(config)
    agent = MetadataAgent(config, client)
    await agent.start(unix_socket=mode != "inline")
    manager = MetadataProxyManager(
        config, inline=agent.inline if config.metadata_proxy_mode is ProxyMode.INLINE else None
    )
    rows: list[Row] = []
    done = 0
    try:
        for k in settings.chain_sizes:
            if mode == "process" and k > settings.process_max:
                continue
            for dhcp, network_id, _inst in nets[done:k]:
                await manager.ensure(dhcp, network_id=network_id, bind=(META_IP, 80))
            done = k
            await _ready(curl, nets[k - 1][2])
            await _ready(curl, nets[0][2])
            if k == settings.chain_sizes[0]:
                url = f"http://{META_IP}{META_PATH}"
                await wrk(url, 1, namespace=nets[0][2])
                figures = await wrk(url, settings.duration, namespace=nets[0][2])
                rows.append(wrk_row(f"chain-{mode}", figures, settings.duration, networks=k))
            await asyncio.sleep(0.3)
            gc.collect()
            pids = [os.getpid(), *manager.pids().values()]
            rows.append(Row(f"memory-{mode}-{k}", pss_bytes=pss_bytes(pids), networks=k))
        if mode == "process" and max(settings.chain_sizes) > settings.process_max:
            rows[-1].note = f"capped at {settings.process_max} networks (~45 MiB per proxy)"
    finally:
        await manager.close()
        await agent.stop()
        await client.close()
    chain_row = rows[0]
    chain_row.pss_bytes = rows[1].pss_bytes
    return rows


async def run_v6(settings: Settings, tmp: Path) -> list[Row]:
    """``chain-inline-v6`` and ``chain-inline-v4``: one network, one instance, the inline
    listener on 169.254.169.254 and ``[fe80::a9fe:a9fe%<port>]``; wrk in turns v4, v6, v6, v4
    (the shared machine's load drifts), each figure the mean of its two turns."""
    from harness import Chain, curl

    from cloudmeta import linux
    from cloudmeta.adminclient import AdminClient
    from cloudmeta.agent import MetadataAgent
    from cloudmeta.proxy.binds import Bind
    from cloudmeta.proxy.headers import ProxyTarget

    need_tools("wrk")
    api = await start_api(tmp / "state")
    chain: Any = None
    agent: Any = None
    client: Any = None
    try:
        options = api.agent_options(namespace_prefix="cmt-", device_prefix="cmt-")
        chain = _bench_chain(Chain)(config=config_of(options))
        chain.client = AdminClient(chain.config)
        chain.project_id = (await chain.client.create_project(f"cmt-{chain.tag}"))["id"]
        ((dhcp, network_id, instance),) = await _build(chain, 1)
        port_end = chain.name("g", 0)  # the instance's veth peer: the "DHCP port"
        for address in (META_V6, WRK_V6):
            await linux.add_address(dhcp, port_end, f"{address}/128", nodad=True)
        await linux.add_route(instance, f"{WRK_V6}/128", dev="eth0")
        config = config_of({**options, "metadata_proxy_mode": "inline"})
        client = AdminClient(config)
        agent = MetadataAgent(config, client)
        await agent.start(unix_socket=False)
        # The binds MetadataProxyManager gives a DHCP port with IPv6, plus wrk's address.
        binds = [Bind(META_IP, 80), Bind(META_V6, 80, port_end), Bind(WRK_V6, 80)]
        await agent.inline.ensure(dhcp, ProxyTarget(network_id=network_id), binds)
        await _ready(curl, instance)
        for host in (f"{META_V6}%25eth0", WRK_V6):
            status = 0
            for _ in range(50):  # the instance's link-local address leaves DAD
                status, _body = await curl(instance, META_PATH, host=host, max_time=2)
                if status == 200:
                    break
                await asyncio.sleep(0.1)
            if status != 200:
                raise RuntimeError(f"no 200 over IPv6 ({host}) from {instance}: {status}")
        urls = {"v4": f"http://{META_IP}{META_PATH}", "v6": f"http://[{WRK_V6}]{META_PATH}"}
        assert api.service.proc is not None
        # The agent and its inline listeners live in this process; the API is a child.
        pids = [os.getpid(), *process_tree(api.service.proc.pid)]
        turns: dict[str, list[dict[str, float]]] = {"v4": [], "v6": []}
        for family in ("v4", "v6", "v6", "v4"):
            await wrk(urls[family], 1, namespace=instance)
            before = cpu_seconds(pids)
            figures = await wrk(urls[family], settings.duration, namespace=instance)
            requests = figures["rps"] * max(1, round(settings.duration))
            figures["cpu_us"] = (cpu_seconds(pids) - before) * 1e6 / max(1.0, requests)
            turns[family].append(figures)
        rows = []
        for family, runs in turns.items():
            mean = {key: sum(r[key] for r in runs) / len(runs) for key in runs[0]}
            mean["failures"] = sum(r["failures"] for r in runs)
            row = wrk_row(f"chain-inline-{family}", mean, settings.duration, networks=1)
            # CPU per request (agent + listener + API): what the shared machine's load moves
            # least.
            row.note = f"cpu_us/request={mean['cpu_us']:.1f}; turns: " + ", ".join(
                f"{r['rps']:.0f} req/s p99 {r['p99_ms']:.2f} ms" for r in runs
            )
            rows.append(row)
        return rows
    finally:
        if agent is not None:
            await agent.stop()
        if client is not None:
            await client.close()
        if chain is not None:
            await chain.close()
        await api.close()
