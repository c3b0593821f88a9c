"""The agent's unix socket as the process and haproxy proxies use it (no root needed)."""

from __future__ import annotations

import socket
import stat
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from harness import Chain, start_chain
from structlog.testing import capture_logs

from cloudmeta.config import ProxyMode

# Two requests per 10 s base window, and a burst window of 3 in 1 s that never binds first.
RATE_LIMIT = {
    "rate_limit_enabled": True,
    "base_query_rate_limit": 2,
    "burst_window_duration": 1,
    "burst_query_rate_limit": 3,
}


@pytest.fixture
async def chain(make_config: Any) -> AsyncIterator[Chain]:
    # A stale socket left by a dead agent is removed at start.
    socket_path = make_config().proxy_socket_path
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(socket_path))
    made = await start_chain(make_config, ProxyMode.PROCESS, metadata_rate_limiting=RATE_LIMIT)
    try:
        yield made
    finally:
        await made.close()


async def _get(chain: Chain, headers: dict[str, str]) -> tuple[int, str, Any]:
    connector = aiohttp.UnixConnector(path=str(chain.config.proxy_socket_path))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get("http://agent/openstack/latest/meta_data.json", headers=headers) as resp,
    ):
        return resp.status, await resp.text(), resp.headers


async def test_socket_mode_is_0660(chain: Chain) -> None:
    mode = chain.config.proxy_socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


async def test_both_network_and_router_is_400(chain: Chain) -> None:
    headers = {
        "X-Forwarded-For": "192.0.2.10",
        "X-Neutron-Network-ID": "n",
        "X-Neutron-Router-ID": "r",
    }
    status, body, _ = await _get(chain, headers)
    assert status == 400 and "Both network n and router r" in body


async def test_no_port_is_404_and_logged_with_network_and_ip(chain: Chain) -> None:
    network_id, _ = await chain.network()
    with capture_logs() as logs:
        status, _, _ = await _get(
            chain, {"X-Forwarded-For": "192.0.2.77", "X-Neutron-Network-ID": network_id}
        )
    assert status == 404
    assert any(e.get("network_id") == network_id and e.get("ip") == "192.0.2.77" for e in logs), (
        logs
    )


async def test_rate_limit_is_429_with_retry_after(chain: Chain) -> None:
    assert chain.client is not None
    network_id, _ = await chain.network()
    await chain.client.create_server(
        "cmt-vm",
        [{"network_id": network_id, "fixed_ip": "192.0.2.10"}],
        project_id=chain.project_id,
    )
    headers = {"X-Forwarded-For": "192.0.2.10", "X-Neutron-Network-ID": network_id}
    statuses = [(await _get(chain, headers))[0] for _ in range(2)]
    assert statuses == [200, 200]
    status, _, response_headers = await _get(chain, headers)
    # The base window's first request leaves it 10 s after it came.
    assert status == 429 and 9 <= int(response_headers["Retry-After"]) <= 10
    # Per source address and network, refused before the port lookup: another address (no
    # port: 404) and the same address on another network are not limited.
    other = {"X-Forwarded-For": "192.0.2.11", "X-Neutron-Network-ID": network_id}
    assert (await _get(chain, other))[0] == 404
    elsewhere, _ = await chain.network()
    moved = {"X-Forwarded-For": "192.0.2.10", "X-Neutron-Network-ID": elsewhere}
    assert (await _get(chain, moved))[0] == 404
