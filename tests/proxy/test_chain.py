"""The whole chain through real namespaces, in each proxy mode: instance -> proxy -> agent ->
metadata API, with the admin API and SQLite store in-process (see harness.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator

import pytest
from harness import META_IP, Chain, Instance, curl, start_chain, uuid_of
from pydantic import SecretStr
from structlog.testing import capture_logs

from cloudmeta.config import ProxyMode

pytestmark = pytest.mark.root

SPOOF_HEADERS = {
    "X-Neutron-Network-ID": "spoofed-net",
    "x-neutron-router-id": "spoofed-router",
    "X-Instance-ID": "spoofed-instance",
    "X-Instance-ID-Signature": "0" * 64,
    "X-Tenant-ID": "spoofed-project",
    "X-Forwarded-For": "192.0.2.11",
}

TOKEN_PATHS = (
    "/latest/api/token",
    "/ec2/latest/api/token",
    "/latest/./api/token",
    "/latest/meta-data/../api/token",
    "/latest/%2e/api/token",
    "//ec2//latest/api/token/",
)


async def _two_networks(chain: Chain) -> list[Instance]:
    """Two networks with the same range, one instance each at the same IP, one proxy each."""
    assert chain.manager is not None
    instances = []
    for index in range(2):
        network_id, _ = await chain.network("192.0.2.0/24")
        dhcp_ns = await chain.gateway_namespace(chain.name("d", index))
        instance = await chain.instance(index, network_id, "192.0.2.10", dhcp_ns, "192.0.2.2")
        await chain.manager.ensure(dhcp_ns, network_id=network_id, bind=(META_IP, 80))
        instances.append(instance)
    return instances


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    made = await start_chain(make_config, request.param)
    try:
        yield made
    finally:
        await made.close()


async def _wait_ok(instance: Instance, deadline: float = 10.0) -> tuple[int, str]:
    """Child proxies need a moment to listen; inline ones are ready at once."""
    end = time.monotonic() + deadline
    while True:
        status, body = await curl(instance.namespace, max_time=2)
        if status not in (0, 503) or time.monotonic() > end:
            return status, body
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_each_instance_gets_its_own_metadata_and_spoofing_changes_nothing(
    chain: Chain,
) -> None:
    first, second = await _two_networks(chain)
    for instance in (first, second):
        status, body = await _wait_ok(instance)
        assert status == 200, body
        assert uuid_of(body) == instance.server_id
        # Every identity header an instance could send is dropped or replaced.
        status, body = await curl(instance.namespace, headers=SPOOF_HEADERS)
        assert (status, uuid_of(body)) == (200, instance.server_id)
        lower = {k.lower(): v for k, v in SPOOF_HEADERS.items()}
        status, body = await curl(instance.namespace, headers=lower)
        assert (status, uuid_of(body)) == (200, instance.server_id)
        # A token PUT that went through a forwarding proxy is refused, however the path is
        # spelt (the API routes all of these to its token handler).
        for path in TOKEN_PATHS:
            status, body = await curl(
                instance.namespace,
                path,
                method="PUT",
                headers={
                    "X-Forwarded-For": "192.0.2.10",
                    "X-aws-ec2-metadata-token-ttl-seconds": "60",
                },
            )
            assert status == 403, (path, body)
        # Without X-Forwarded-For the same spellings reach the API and get a token.
        status, body = await curl(
            instance.namespace,
            "/ec2/latest/./api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        assert status == 200, body


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_router_lookup_across_two_subnets(chain: Chain) -> None:
    assert chain.client is not None and chain.manager is not None
    router = await chain.client.create_router(f"cmt-{chain.tag}", project_id=chain.project_id)
    router_ns = await chain.gateway_namespace(chain.name("r", 0))
    instances = []
    for index, (cidr, gateway, ip) in enumerate(
        [
            ("192.0.2.0/24", "192.0.2.1", "192.0.2.20"),
            ("198.51.100.0/24", "198.51.100.1", "198.51.100.20"),
        ]
    ):
        network_id, subnet_id = await chain.network(cidr)
        await chain.client.add_router_interface(router["id"], subnet_id)
        instances.append(await chain.instance(index, network_id, ip, router_ns, gateway))
    await chain.manager.ensure(router_ns, router_id=router["id"], bind=(META_IP, 80))
    for instance in instances:
        status, body = await _wait_ok(instance)
        assert (status, uuid_of(body)) == (200, instance.server_id), body


async def _answer_within(instance: Instance, expected: object, limit: float = 1.0) -> object:
    """Curl until the answer (status, uuid) is ``expected`` or ``limit`` s pass; the last one."""
    started = time.monotonic()
    answer: object = None
    while time.monotonic() - started < limit:
        status, body = await curl(instance.namespace, max_time=1)
        answer = (status, uuid_of(body))
        if answer == expected:
            break
    return answer


@pytest.mark.parametrize("chain", [ProxyMode.INLINE], indirect=True, ids=str)
async def test_deleted_or_moved_port_follows_within_a_second(chain: Chain) -> None:
    """Only the port goes (the server stays, so the API would still answer for it): a 404
    here proves the agent's port cache followed the change feed, not the API's own 404."""
    assert chain.client is not None
    first, second = await _two_networks(chain)
    network_id = (await chain.client.get_port(first.port_id))["network_id"]
    assert (await curl(first.namespace))[0] == 200
    await chain.client.delete_port(first.port_id)
    assert await _answer_within(first, (404, None)) == (404, None)
    # The address moves to another server: the same caller now gets the new instance.
    moved = await chain.client.create_server(
        f"cmt-{chain.tag}-moved",
        [{"network_id": network_id, "fixed_ip": first.ip}],
        project_id=chain.project_id,
    )
    assert moved["id"] != first.server_id
    assert await _answer_within(first, (200, moved["id"])) == (200, moved["id"])
    assert (await curl(second.namespace))[0] == 200


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_api_down_is_503_fast_then_back(chain: Chain) -> None:
    first, _ = await _two_networks(chain)
    assert (await _wait_ok(first))[0] == 200
    port = chain.config.nova_metadata_port
    await chain.stop_serving("metadata")
    started = time.monotonic()
    status, _ = await curl(first.namespace)
    assert status == 503
    assert time.monotonic() - started < chain.config.nova_metadata_timeout
    assert chain.store is not None
    await chain.serve("metadata", chain.config, port)
    assert (await curl(first.namespace))[0] == 200


@pytest.mark.parametrize("chain", list(ProxyMode), indirect=True, ids=str)
async def test_wrong_secret_is_403_and_logged(chain: Chain) -> None:
    first, _ = await _two_networks(chain)
    assert (await _wait_ok(first))[0] == 200
    assert chain.store is not None
    port = chain.config.nova_metadata_port
    other = chain.config.model_copy(
        update={"metadata_proxy_shared_secret": SecretStr("cmt-other-secret")}
    )
    await chain.stop_serving("metadata")
    await chain.serve("metadata", other, port)
    with capture_logs() as logs:
        status, _ = await curl(first.namespace)
    assert status == 403
    assert any("shared secrets differ" in entry["event"] for entry in logs), logs


@pytest.mark.parametrize("chain", [ProxyMode.HAPROXY], indirect=True, ids=str)
async def test_dead_proxy_is_respawned(chain: Chain) -> None:
    assert chain.manager is not None
    first, _ = await _two_networks(chain)
    assert (await _wait_ok(first))[0] == 200
    pids = chain.manager.pids()
    os.kill(pids[chain.name("d", 0)], signal.SIGKILL)
    killed = time.monotonic()
    while chain.manager.pids()[chain.name("d", 0)] == pids[chain.name("d", 0)]:
        assert time.monotonic() - killed < 5, "the ProcessMonitor did not respawn the proxy"
        await asyncio.sleep(0.05)
    status, body = await _wait_ok(first)
    assert (status, uuid_of(body)) == (200, first.server_id)
