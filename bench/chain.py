"""Scenarios ``chain-<mode>`` and ``memory-<mode>-<K>``: instance namespace -> proxy -> agent
-> metadata API for each proxy mode, and the PSS of agent + proxies at K served networks.

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

from bench.common import META_IP, META_PATH, Row, Settings, need_tools, pss_bytes, wrk, wrk_row
from bench.services import config_of, start_api

# The chain is the tests' harness (tests/proxy/harness.py), which imports tests/support.
_TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(_TESTS / "proxy"), str(_TESTS)]

MODES = ("inline", "haproxy", "process")
BUILD_PARALLEL = 8


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
