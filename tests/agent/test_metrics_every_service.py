"""Every service's ``/metrics``, scraped as Prometheus would (prometheus_client's parser), from
the processes a deployment runs: ``cloudmeta api`` on the admin port, and ``cloudmeta agent``,
``dhcp-agent`` and ``l3-agent`` on their ``metrics_listen``. One network with a subnet and a
router on it (``process`` mode, so each agent starts real children): each process exports the
families it owns, counts the children it started and follows the change feed to the
inventory's revision."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.dhcp.driver import pid_dir
from cloudmeta.lab.childenv import config_env
from support.cli import CLI, free_port
from support.scrape import Samples, scrape, total

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

TOKEN = "cmt-admin-token"
# Families every process exports (its requests, listeners, feed); the rest per service below.
COMMON = {
    "cloudmeta_metadata_requests",
    "cloudmeta_metadata_request_duration_seconds",
    "cloudmeta_open_connections",
    "cloudmeta_refused_connections",
    "cloudmeta_head_timeouts",
    "cloudmeta_change_feed_revision",
    "cloudmeta_change_feed_apply_seconds",
    "cloudmeta_process_starts",
    "cloudmeta_process_respawns",
    "cloudmeta_process_restarts",
}
INVENTORY = {"cloudmeta_inventory_objects", "cloudmeta_inventory_revision"}


class Service:
    """One ``cloudmeta COMMAND`` child with its log in the state dir."""

    def __init__(self, command: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.command = command
        self.proc = proc
        self.log = log

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def stop(self) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0


async def _start(stack: AsyncExitStack, config: Config, command: str) -> Service:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")}
    env.update(config_env(config))
    log = config.state_path / f"cmt-{command}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *CLI, command, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env
        )
    service = Service(command, proc, log)
    stack.push_async_callback(service.stop)
    return service


async def _until_scraped(service: Service, url: str, timeout: float = 30.0) -> Samples:  # noqa: ASYNC109
    """Scrape ``url`` once the service listens (it exits early: its log says why)."""
    end = time.monotonic() + timeout
    while True:
        try:
            return (await scrape(url))[1]
        except OSError:
            assert service.proc.returncode is None, f"{service.command} exited:\n{service.tail()}"
            assert time.monotonic() < end, f"{service.command} never served {url}"
            await asyncio.sleep(0.1)


@pytest.fixture
async def cloud(make_config: Callable[..., Any]) -> AsyncIterator[tuple[Config, str]]:
    """(the agents' configuration, the namespace prefix); everything removed after."""
    tag = secrets.token_hex(3)
    prefix = f"cmt-{tag}-"
    admin, metadata = free_port(), free_port()
    config: Config = make_config(
        admin_token=TOKEN,
        admin={"listen": "127.0.0.1", "port": admin},
        admin_url=f"http://127.0.0.1:{admin}",
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": metadata},
        nova_metadata_port=metadata,
        namespace_prefix=prefix,
        # Link names fit 15 characters: "cmt-NN" + "brq" + 6 characters of an id.
        device_prefix=f"cmt-{secrets.randbelow(90) + 10}",
        bridge_namespace=f"{prefix}fabric",
        enable_isolated_metadata=True,
        metadata_proxy_mode="process",
    )
    try:
        yield config, prefix
    finally:
        await linux.cleanup(namespaces=linux.list_namespaces(prefix), pid_dir=pid_dir(config))


async def test_each_service_serves_its_own_metrics(cloud: tuple[Config, str]) -> None:
    config, prefix = cloud
    async with AsyncExitStack() as stack:
        api = await _start(stack, config, "api")
        admin_url = f"{config.admin_url}/metrics"
        await _until_scraped(api, admin_url)
        urls: dict[str, tuple[Service, str]] = {}
        for command in ("agent", "dhcp-agent", "l3-agent"):
            port = free_port()
            own = config.model_copy(update={"metrics_listen": f"127.0.0.1:{port}"})
            service = await _start(stack, own, command)
            urls[command] = (service, f"http://127.0.0.1:{port}/metrics")
        for service, url in urls.values():
            await _until_scraped(service, url)

        async with AdminClient(config) as client:
            project = (await client.create_project(f"{prefix}project"))["id"]
            net = await client.create_network(f"{prefix}net", project_id=project)
            sub = await client.create_subnet(net["id"], "192.0.2.0/24", project_id=project)
            router = await client.create_router(f"{prefix}router", project_id=project)
            await client.add_router_interface(router["id"], sub["id"])
            revision = await client.revision()

        def fed(samples: Samples, consumer: str) -> bool:
            return total(samples, "cloudmeta_change_feed_revision", consumer=consumer) >= revision

        def started(samples: Samples, child: str) -> bool:
            return total(samples, "cloudmeta_process_starts_total", service=child) >= 1

        # What each process must show once it has acted on the network and the router.
        wanted: dict[str, Callable[[Samples], bool]] = {
            "agent": lambda s: fed(s, "port-cache"),
            "dhcp-agent": lambda s: (
                fed(s, "dhcp-agent") and started(s, "dnsmasq") and started(s, "metadata-proxy")
            ),
            "l3-agent": lambda s: fed(s, "l3-agent") and started(s, "metadata-proxy"),
        }
        end = time.monotonic() + 60
        for command, (service, url) in urls.items():
            while True:
                families, samples = await scrape(url)
                assert families >= COMMON, (command, COMMON - families)
                # The inventory is the admin API's to count, at scrape time.
                assert not families & INVENTORY, command
                if wanted[command](samples):
                    break
                assert service.proc.returncode is None, f"{command} exited:\n{service.tail()}"
                assert time.monotonic() < end, f"{command}: {samples}\n{service.tail()}"
                await asyncio.sleep(0.2)
            if command == "agent":
                assert "cloudmeta_port_cache_lookups" in families
                assert "cloudmeta_rate_limited_requests" in families
                key = ("cloudmeta_open_connections", frozenset({("listener", "agent-socket")}))
                assert key in samples
            # The scrape itself is an open connection of the metrics listener.
            assert total(samples, "cloudmeta_open_connections", listener="metrics") >= 1

        families, samples = await scrape(admin_url)
        assert families >= COMMON | INVENTORY | {"cloudmeta_document_cache_lookups"}
        assert total(samples, "cloudmeta_inventory_revision") >= revision
        for kind in ("network", "subnet", "router"):
            assert total(samples, "cloudmeta_inventory_objects", kind=kind) == 1, kind
        assert total(samples, "cloudmeta_open_connections", listener="admin") >= 1
        for service in [api, *(s for s, _ in urls.values())]:
            assert await service.stop() == 0, f"{service.command}:\n{service.tail()}"
