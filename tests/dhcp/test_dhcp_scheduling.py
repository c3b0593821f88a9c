"""Two DHCP agents (two hosts) on one admin API: each serves only the networks scheduled to
it; when one dies, its network moves to the other with its DHCP port, so an instance keeps
reaching metadata through the address its route already names (no DHCP renewal)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from dhcp_cloud import DhcpCloud, curl_metadata, start_cloud, uuid_of

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.dhcp import DhcpAgent


@pytest.fixture
async def cloud(make_config: Callable[..., Config]) -> AsyncIterator[DhcpCloud]:
    started = await start_cloud(
        make_config, force_metadata=True, agent_down_time=1.5, report_interval=0.3
    )
    try:
        yield started
    finally:
        await started.close()


async def _second_agent(cloud: DhcpCloud) -> tuple[DhcpAgent, asyncio.Task[None], Config]:
    assert cloud.config and cloud.client and cloud.proxies and cloud.monitor
    config = cloud.config.model_copy(
        update={"host": f"{cloud.prefix}h2", "namespace_prefix": f"{cloud.prefix}b-"}
    )
    agent = DhcpAgent(config, cloud.client, cloud.proxies, cloud.monitor)
    task = asyncio.create_task(agent.run())
    await agent.wait_for_revision(await cloud.client.revision())
    return agent, task, config


async def test_each_agent_serves_its_networks_and_takes_over_a_dead_ones(
    cloud: DhcpCloud,
) -> None:
    assert cloud.client is not None and cloud.agent is not None and cloud.config is not None
    other, task, other_config = await _second_agent(cloud)
    try:
        net_a, _ = await cloud.network("192.0.2.0/24")
        net_b, _ = await cloud.network("198.51.100.0/24")
        await other.wait_for_revision(await cloud.client.revision())
        first, second = set(cloud.agent.networks), set(other.networks)
        assert first | second == {net_a, net_b} and len(first) == len(second) == 1
        (mine,) = first
        assert linux.namespace_exists(cloud.namespace(mine))
        assert not linux.namespace_exists(f"{other_config.namespace_prefix}qdhcp-{mine}")
        vm = await cloud.boot(mine)
        assert uuid_of(await curl_metadata(vm.namespace)) == vm.server_id
        (port,) = await cloud.client.list_ports(network_id=mine, device_owner="network:dhcp")

        await cloud.stop_agent(teardown=True)  # the first host dies with its dnsmasq
        started = time.monotonic()
        assert not linux.namespace_exists(cloud.namespace(mine))
        deadline = started + 15
        while mine not in other.networks:
            assert time.monotonic() < deadline, "the network never moved to the live agent"
            await asyncio.sleep(0.1)
        moved = (await cloud.client.list_ports(network_id=mine, device_owner="network:dhcp"))[0]
        assert (moved["id"], moved["mac_address"], moved["fixed_ips"]) == (
            port["id"],
            port["mac_address"],
            port["fixed_ips"],
        )
        while uuid_of(await curl_metadata(vm.namespace)) != vm.server_id:
            assert time.monotonic() < deadline, "metadata never came back through the new agent"
            await asyncio.sleep(0.2)
        print(f"\nDHCP failover: metadata back {time.monotonic() - started:.1f} s after the loss")
        agents = {a["host"]: a for a in await cloud.client.list_agents()}
        assert (
            not agents[cloud.config.host]["alive"] and agents[cloud.config.host]["networks"] == []
        )
        assert sorted(agents[other_config.host]["networks"]) == sorted([net_a, net_b])
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await other.close(teardown=True)
