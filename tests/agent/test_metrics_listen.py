"""``metrics_listen``: a process without the admin API's port (here ``cloudmeta agent``)
serves ``GET /metrics`` on its own listener, through the one serving stack."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import aiohttp

from cloudmeta.services import ServiceSet, running_services
from support.scrape import scrape, total

TOKEN = "cmt-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_agent_serves_its_metrics_on_metrics_listen(make_config: Any) -> None:
    api_config = make_config(
        admin_token=TOKEN,
        admin={"listen": "127.0.0.1", "port": _free_port()},
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": _free_port()},
    )
    async with running_services(api_config, ServiceSet(api=True)) as api:
        admin_port = api.api_addresses["admin"][1]
        assert api.metrics_address is None  # off unless configured
        agent_config = make_config(
            admin_token=TOKEN,
            admin_url=f"http://127.0.0.1:{admin_port}",
            metadata_proxy_mode="process",
            metrics_listen="127.0.0.1:0",
        )
        async with running_services(agent_config, ServiceSet(metadata_agent=True)) as agent:
            assert agent.metrics_address is not None
            host, port = agent.metrics_address
            url = f"http://{host}:{port}/metrics"
            families, samples = await scrape(url)
            assert {
                "cloudmeta_metadata_requests",
                "cloudmeta_metadata_request_duration_seconds",
                "cloudmeta_port_cache_lookups",
                "cloudmeta_change_feed_revision",
                "cloudmeta_open_connections",
                "cloudmeta_refused_connections",
            } <= families
            # The inventory is the admin API's to count, not the agent's.
            assert "cloudmeta_inventory_objects" not in families
            # Our own scrape is an open connection of the metrics listener.
            assert total(samples, "cloudmeta_open_connections", listener="metrics") >= 1
            assert ("cloudmeta_open_connections", frozenset({("listener", "agent-socket")})) in (
                samples
            )
            # The agent's feed reaches the inventory's revision.
            _, admin = await scrape(f"http://127.0.0.1:{admin_port}/metrics")
            revision = total(admin, "cloudmeta_inventory_revision")
            end = time.monotonic() + 10.0
            # (at least: the agent's own registration is a change of its own)
            while total(samples, "cloudmeta_change_feed_revision", consumer="port-cache") < (
                revision
            ):
                assert time.monotonic() < end, "the agent's feed never applied a batch"
                await asyncio.sleep(0.05)
                _, samples = await scrape(url)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{host}:{port}/other") as resp:
                    assert resp.status == 404
                async with session.post(url) as resp:
                    assert resp.status == 405
