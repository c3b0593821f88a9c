"""Two API hosts on one PostgreSQL database: a write acknowledged by host A is answered from
the new state by host B's metadata API (its cached document dropped by A's NOTIFY), measured
over a series of writes. Each host has its own state_path: no shared revision file.

The change feed's fallback poll is set to a minute here, so that a write answered by B within
the 5 s bound can only have been carried by A's NOTIFY: an event, not a latency bound, which a
busy machine would break (the delays are printed; their figures are the bench's cross-host)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import pytest

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.inventory import Store
from cloudmeta.inventory import store as store_module
from cloudmeta.signing import sign_instance_id
from inventory.dbfixtures import pg_url
from support.serving import shipped

pytestmark = pytest.mark.postgres
__all__ = ["pg_url"]  # the fixture
PATH = "/openstack/latest/meta_data.json"
WRITES = 40


async def test_a_write_on_host_a_is_answered_by_host_b(
    make_config: Callable[..., Config],
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "POLL_INTERVAL", 60.0)
    configs = [
        make_config(state_path=tmp_path / f"cmt-host-{h}", database={"connection": pg_url})
        for h in "ab"
    ]
    async with AsyncExitStack() as stack:
        stores = []
        for config in configs:
            store = await Store.open(config)
            stack.push_async_callback(store.close)
            stores.append(store)
        admin_port = await stack.enter_async_context(shipped(configs[0], stores[0], "admin"))
        b_port = await stack.enter_async_context(shipped(configs[1], stores[1], "metadata"))
        admin = AdminClient(configs[0], url=f"http://127.0.0.1:{admin_port}")
        stack.push_async_callback(admin.close)
        network = await admin.create_network("cmt-net")
        await admin.create_subnet(network["id"], "192.0.2.0/24")
        server = await admin.create_server("cmt-vm", [{"network_id": network["id"]}])
        port = await admin.get_port(server["ports"][0])
        headers = {
            "X-Instance-ID": server["id"],
            "X-Tenant-ID": server["project_id"],
            "X-Instance-ID-Signature": sign_instance_id("cmt-test-secret", server["id"]),
            "X-Forwarded-For": port["fixed_ips"][0]["ip_address"],
        }
        url = f"http://127.0.0.1:{b_port}{PATH}"
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def seq() -> str | None:
            async with session.get(url, headers=headers) as response:
                assert response.status == 200
                meta: dict[str, str] = json.loads(await response.read()).get("meta", {})
                return meta.get("seq")

        assert await seq() is None  # B now holds the document
        delays = []
        for index in range(WRITES):
            await admin.update_server(server["id"], metadata={"seq": str(index)})
            acked = time.perf_counter()
            while (found := await seq()) != str(index):
                assert found in (None, str(index - 1)), found  # old or new, never other
                assert time.perf_counter() - acked < 5, "no NOTIFY reached host B"
            delays.append(time.perf_counter() - acked)
        delays.sort()
        p99 = delays[int(len(delays) * 0.99)]
        print(
            f"\ncross-host delay over {WRITES} writes: p50 "
            f"{statistics.median(delays) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
        )
