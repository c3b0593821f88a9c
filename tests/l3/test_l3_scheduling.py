"""Two L3 agents (two hosts) on one admin API: a router is built by the one it is scheduled
to only; when that one dies, the router moves to the other, which builds it (same interface
ports: same gateway address and MAC) and the instance behind it gets metadata again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from l3_cloud import L3Cloud, curl, start_cloud, uuid_of

from cloudmeta import linux
from cloudmeta.config import Config
from cloudmeta.l3.agent import L3Agent

pytestmark = pytest.mark.root


@pytest.fixture
async def cloud(make_config: Callable[..., Config], state_dir: Path) -> AsyncIterator[L3Cloud]:
    made = await start_cloud(make_config, state_dir, agent_down_time=1.5, report_interval=0.3)
    try:
        yield made
    finally:
        await made.close()


async def test_a_router_lives_on_one_agent_and_moves_when_it_dies(cloud: L3Cloud) -> None:
    assert cloud.proxies is not None
    first = cloud.start_l3()
    second_config = cloud.config.model_copy(
        update={"host": cloud.ns("h2"), "namespace_prefix": cloud.ns("b-")}
    )
    second = L3Agent(second_config, cloud.admin, cloud.proxies, cloud.monitor)
    cloud.agents["l3-b"] = second
    cloud.tasks.append(asyncio.create_task(second.run()))
    net, sub = await cloud.network("192.0.2.0/24")
    router = await cloud.admin.create_router(cloud.ns("router"), project_id=cloud.project_id)
    await cloud.admin.add_router_interface(router["id"], sub)
    await cloud.settle()
    owner, other = (first, second) if router["id"] in first.routers else (second, first)
    assert router["id"] in owner.routers and router["id"] not in other.routers
    assert linux.namespace_exists(owner.manager.namespace(router["id"]))
    assert not linux.namespace_exists(other.manager.namespace(router["id"]))
    vm = await cloud.instance(0, net, "192.0.2.10", gateway="192.0.2.1")
    assert uuid_of((await curl(vm.namespace))[1]) == vm.server_id

    index = 0 if owner is first else 1
    task = cloud.tasks.pop(index)  # the owner's host dies with its router namespace
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await owner.manager.remove(router["id"])
    started = time.monotonic()
    while router["id"] not in other.routers:
        assert time.monotonic() - started < 15, "the router never moved to the live agent"
        await asyncio.sleep(0.1)
    while uuid_of((await curl(vm.namespace, max_time=2))[1]) != vm.server_id:
        assert time.monotonic() - started < 15, "metadata never came back through the new router"
    print(f"\nL3 failover: metadata back {time.monotonic() - started:.1f} s after the loss")
    hosts = {a["host"]: a for a in await cloud.admin.list_agents(agent_type="L3 agent")}
    assert hosts[other.reporter.host]["routers"] == [router["id"]]
    assert hosts[owner.reporter.host]["routers"] == [] and not hosts[owner.reporter.host]["alive"]
