"""Agents over the admin API, on SQLite and PostgreSQL: registration, heartbeats, scheduling,
rescheduling a dead agent's work (its DHCP port with it), two API hosts scheduling at once."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from admin.helpers import running_admin
from cloudmeta.adminclient import AdminClient, AdminError, AgentReporter
from cloudmeta.config import Config
from cloudmeta.scheduler import AGENT_TYPE_DHCP, AGENT_TYPE_L3, AGENT_TYPE_METADATA, dhcp_device_id


def _config(db_config: Config, **overrides: Any) -> Config:
    return db_config.model_copy(update=overrides)


async def _hosting(admin: AdminClient) -> dict[str, dict[str, list[str]]]:
    return {
        a["host"] + "/" + a["agent_type"]: {"networks": a["networks"], "routers": a["routers"]}
        for a in await admin.list_agents()
    }


async def test_agents_register_report_and_get_the_work(db_config: Config) -> None:
    async with running_admin(db_config) as (_, admin):
        early = await admin.create_network("cmt-early")  # before any agent: bound at register
        dhcp = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h1", {"dhcp_driver": "dnsmasq"})
        assert dhcp["alive"] and dhcp["networks"] == [early["id"]] and dhcp["routers"] == []
        l3 = await admin.register_agent(AGENT_TYPE_L3, "cmt-h1")
        meta = await admin.register_agent(AGENT_TYPE_METADATA, "cmt-h1")
        network = await admin.create_network("cmt-late")
        router = await admin.create_router("cmt-r")
        shown = {a["id"]: a for a in await admin.list_agents()}
        assert set(shown) == {dhcp["id"], l3["id"], meta["id"]}
        assert shown[dhcp["id"]]["networks"] == sorted([early["id"], network["id"]])
        assert shown[l3["id"]]["routers"] == [router["id"]]
        assert shown[meta["id"]]["networks"] == shown[meta["id"]]["routers"] == []
        assert shown[dhcp["id"]]["configurations"] == {"dhcp_driver": "dnsmasq"}
        # A restarted agent registers again under the same identity.
        again = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h1")
        assert again["id"] == dhcp["id"]
        before = (await admin.get_agent(dhcp["id"]))["heartbeat_at"]
        reported = await admin.report_agent(dhcp["id"])
        assert reported["heartbeat_at"] >= before and reported["alive"]
        assert await admin.list_agents(agent_type=AGENT_TYPE_L3) == [
            await admin.get_agent(l3["id"])
        ]
        with pytest.raises(AdminError) as missing:
            await admin.report_agent("cmt-no-such-agent")
        assert missing.value.status == 404
        with pytest.raises(AdminError) as bad:
            await admin.register_agent("Bogus agent", "cmt-h1")
        assert bad.value.status == 400
        # Deleting the network drops its binding.
        await admin.delete_network(early["id"])
        assert (await admin.get_agent(dhcp["id"]))["networks"] == [network["id"]]


async def test_heartbeats_wake_no_feed_and_reporter_registers_again(db_config: Config) -> None:
    async with running_admin(db_config) as (_, admin):
        reporter = AgentReporter(admin, AGENT_TYPE_DHCP, "cmt-h1", 0.05)
        first = await reporter.report()
        revision = await admin.revision()
        for _ in range(3):
            await reporter.report()
        assert await admin.revision() == revision  # a heartbeat is no change
        await admin.delete_agent(first["id"])
        again = await reporter.report()  # forgotten: registers anew
        assert again["id"] != first["id"] and reporter.agent_id == again["id"]


async def test_a_dead_agents_network_and_router_move_with_the_dhcp_port(
    db_config: Config,
) -> None:
    config = _config(db_config, agent_down_time=1.0)
    async with running_admin(config) as (_, admin):
        one = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h1")
        network = await admin.create_network("cmt-net")
        await admin.create_subnet(network["id"], "192.0.2.0/24")
        port = await admin.create_port(
            network["id"],
            device_owner="network:dhcp",
            device_id=dhcp_device_id(network["id"], "cmt-h1"),
            fixed_ips=[{"subnet_id": (await admin.list_subnets(network["id"]))[0]["id"]}],
        )
        two = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h2")
        x = await admin.register_agent(AGENT_TYPE_L3, "cmt-h1")
        router = await admin.create_router("cmt-r")
        y = await admin.register_agent(AGENT_TYPE_L3, "cmt-h2")
        hosting = await _hosting(admin)
        assert hosting["cmt-h1/DHCP agent"]["networks"] == [network["id"]]
        assert hosting["cmt-h2/DHCP agent"]["networks"] == []
        assert hosting["cmt-h1/L3 agent"]["routers"] == [router["id"]]
        since = await admin.revision()
        deadline = time.monotonic() + 1.3
        while time.monotonic() < deadline:  # h2 keeps reporting, h1 fell silent
            await admin.report_agent(two["id"])
            await admin.report_agent(y["id"])
            await asyncio.sleep(0.2)
        await admin.report_agent(two["id"])
        await admin.report_agent(y["id"])
        shown = {a["id"]: a for a in await admin.list_agents()}
        assert not shown[one["id"]]["alive"] and not shown[x["id"]]["alive"]
        assert shown[two["id"]]["alive"]
        assert shown[one["id"]]["networks"] == [] and shown[two["id"]]["networks"] == [
            network["id"]
        ]
        assert shown[x["id"]]["routers"] == [] and shown[y["id"]]["routers"] == [router["id"]]
        moved = await admin.get_port(port["id"])  # the same port, address and MAC: h2's now
        assert moved["device_id"] == dhcp_device_id(network["id"], "cmt-h2")
        assert moved["fixed_ips"] == port["fixed_ips"]
        page = await admin.changes(since, timeout=0)
        assert page.changes is not None
        told = {c["id"] for c in page.changes if c["kind"] == "agent"}
        assert told == {one["id"], two["id"], x["id"], y["id"]}


async def test_with_failover_off_a_dead_agent_keeps_its_work(db_config: Config) -> None:
    config = _config(
        db_config,
        agent_down_time=0.5,
        allow_automatic_dhcp_failover=False,
        allow_automatic_l3agent_failover=False,
    )
    async with running_admin(config) as (_, admin):
        one = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h1")
        network = await admin.create_network("cmt-net")
        two = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h2")
        await asyncio.sleep(0.7)
        await admin.report_agent(two["id"])
        assert (await admin.get_agent(one["id"]))["networks"] == [network["id"]]
        assert (await admin.get_agent(two["id"]))["networks"] == []


async def test_two_api_hosts_scheduling_at_once_keep_every_quota(db_config: Config) -> None:
    """Registrations and network creations raced over two admin APIs on one database: every
    network ends with exactly dhcp_agents_per_network agents, none scheduled twice over."""
    config = _config(db_config, dhcp_agents_per_network=2)
    async with running_admin(config) as (_, a), running_admin(config) as (_, b):
        clients = [a, b]
        jobs = [clients[i % 2].register_agent(AGENT_TYPE_DHCP, f"cmt-h{i}") for i in range(4)] + [
            clients[i % 2].create_network(f"cmt-n{i}") for i in range(12)
        ]
        await asyncio.gather(*jobs)
        await a.report_agent((await a.list_agents())[0]["id"])  # fills what raced past
        agents = await b.list_agents()
        per_network: dict[str, int] = {}
        for agent in agents:
            for network_id in agent["networks"]:
                per_network[network_id] = per_network.get(network_id, 0) + 1
        assert len(per_network) == 12 and set(per_network.values()) == {2}
        assert sum(len(agent["networks"]) for agent in agents) == 24


async def test_cli_agent_list(make_config: Any, state_dir: Path) -> None:
    config: Config = make_config()
    async with running_admin(config) as (url, admin):
        dhcp = await admin.register_agent(AGENT_TYPE_DHCP, "cmt-h1")
        network = await admin.create_network("cmt-net")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")} | {
            "CLOUDMETA_STATE_PATH": str(state_dir),
            "CLOUDMETA_ADMIN_URL": url,
            "COLUMNS": "250",
        }
        for fmt in ("json", "table"):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from cloudmeta.cli.main import main; main()",
                "agent",
                "list",
                "-f",
                fmt,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            assert process.returncode == 0, err.decode()
            if fmt == "json":
                (shown,) = json.loads(out)
                assert {k: shown[k] for k in ("agent_type", "host", "alive", "networks")} == {
                    "agent_type": "DHCP agent",
                    "host": "cmt-h1",
                    "alive": True,
                    "networks": [network["id"]],
                }
                assert shown["routers"] == [] and shown["id"] == dhcp["id"]
            else:
                text = out.decode()
                assert "DHCP agent" in text and "cmt-h1" in text and ":-)" in text
                assert network["id"] in text


async def test_the_metadata_agent_reports_under_its_host(make_config: Any) -> None:
    from cloudmeta.services import ServiceSet, running_services

    base: Config = make_config()
    async with running_admin(base) as (url, admin):
        config = base.model_copy(
            update={"admin_url": url, "host": "cmt-meta-host", "report_interval": 0.2}
        )
        async with running_services(config, ServiceSet(metadata_agent=True)):
            deadline = time.monotonic() + 10
            while not (found := await admin.list_agents(agent_type=AGENT_TYPE_METADATA)):
                assert time.monotonic() < deadline, "the metadata agent never registered"
                await asyncio.sleep(0.1)
            (agent,) = found
            assert agent["host"] == "cmt-meta-host" and agent["alive"]
            assert agent["configurations"]["nova_metadata_host"] == config.nova_metadata_host
            first = agent["heartbeat_at"]
            while (await admin.get_agent(agent["id"]))["heartbeat_at"] == first:
                assert time.monotonic() < deadline, "no heartbeat followed the registration"
                await asyncio.sleep(0.1)
