"""A small cloud for the L3 agent's end-to-end tests, all in this process on loopback.

Store + admin API + metadata API (port 0), the metadata agent embedded with an inline proxy
manager, the L3 agent (and optionally the DHCP agent) following the admin API, and instance
namespaces plugged into the networks' bridges. Every name is ``cmt-<6 hex>-...`` (namespaces)
or derived from the ids of what the test created (bridges, veths); ``close()`` removes exactly
those, even after a failure half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.agent.embedded import start_embedded
from cloudmeta.agent.service import MetadataAgent
from cloudmeta.config import Config
from cloudmeta.inventory import Store
from cloudmeta.l3.agent import L3Agent
from cloudmeta.l3.model import bridge_port_name, interface_name
from cloudmeta.l3.rules import NAT_CHAIN
from cloudmeta.linux.dhclient import run_dhclient
from cloudmeta.linux.iptables import iptables_counters
from cloudmeta.linux.names import bridge_name
from cloudmeta.proxy.manager import MetadataProxyManager
from support.serving import shipped

META_IP = "169.254.169.254"
DEVICE_PREFIX = "cmt-"


@dataclass
class Instance:
    namespace: str
    ip: str
    server_id: str
    port_id: str


@dataclass
class L3Cloud:
    config: Config
    state_dir: Path
    tag: str
    store: Store | None = None
    client: AdminClient | None = None
    runners: AsyncExitStack = field(default_factory=AsyncExitStack)
    proxies: MetadataProxyManager | None = None
    metadata_agent: MetadataAgent | None = None
    monitor: linux.ProcessMonitor | None = None
    agents: dict[str, Any] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    project_id: str = ""
    network_ids: list[str] = field(default_factory=list)
    port_ids: list[str] = field(default_factory=list)

    @property
    def admin(self) -> AdminClient:
        assert self.client is not None
        return self.client

    @property
    def l3(self) -> L3Agent:
        agent: L3Agent = self.agents["l3"]
        return agent

    @property
    def bridge_namespace(self) -> str | None:
        return self.config.bridge_namespace or None

    def ns(self, kind: str) -> str:
        return f"cmt-{self.tag}-{kind}"

    async def network(self, cidr: str, **subnet: Any) -> tuple[str, str]:
        net = await self.admin.create_network(self.ns("net"), project_id=self.project_id)
        self.network_ids.append(net["id"])
        sub = await self.admin.create_subnet(net["id"], cidr, project_id=self.project_id, **subnet)
        return net["id"], sub["id"]

    def start_l3(self) -> L3Agent:
        assert self.proxies is not None
        agent = L3Agent(self.config, self.admin, self.proxies, self.monitor)
        self.agents["l3"] = agent
        self.tasks.append(asyncio.create_task(agent.run()))
        return agent

    def start_dhcp(self) -> Any:
        from cloudmeta.dhcp.agent import DhcpAgent

        assert self.proxies is not None and self.monitor is not None
        agent = DhcpAgent(self.config, self.admin, self.proxies, self.monitor)
        self.agents["dhcp"] = agent
        self.tasks.append(asyncio.create_task(agent.run()))
        return agent

    async def settle(self) -> None:
        """Until every running agent has acted on everything the admin API has now."""
        revision = await self.admin.revision()
        for agent in self.agents.values():
            await agent.wait_for_revision(revision)

    async def plug(
        self, index: int, network_id: str, fixed: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, Any], str]:
        """A server on ``network_id`` (``fixed``: its fixed_ip, if any) and namespace ``vm<index>``
        with ``eth0`` on the network's bridge; no address set. Its (server, port, namespace)."""
        server = await self.admin.create_server(
            self.ns(f"vm{index}"),
            [{"network_id": network_id, **fixed}],
            project_id=self.project_id,
        )
        port = await self.admin.get_port(server["ports"][0])
        self.port_ids.append(port["id"])
        ns = self.ns(f"vm{index}")
        linux.create_namespace(ns)
        bridge = bridge_name(DEVICE_PREFIX, network_id)
        await linux.create_bridge(self.bridge_namespace, bridge)
        await linux.plug_veth(
            ns,
            "eth0",
            mac=port["mac_address"],
            host_ifname=bridge_port_name(DEVICE_PREFIX, port["id"]),
            bridge=bridge,
            bridge_namespace=self.bridge_namespace,
        )
        return server, port, ns

    async def instance(
        self, index: int, network_id: str, ip: str, *, gateway: str | None, dhcp: bool = False
    ) -> Instance:
        """A server and its namespace on the network's bridge: static ``ip/24`` with a default
        route via ``gateway``, or (``dhcp``) whatever dhclient gets from the DHCP agent."""
        server, port, ns = await self.plug(index, network_id, {"fixed_ip": ip})
        if dhcp:
            own = self.state_dir / ns  # its own pid and lease files
            own.mkdir()
            await run_dhclient(ns, "eth0", state_dir=own)
        else:
            await linux.add_address(ns, "eth0", f"{ip}/24")
            if gateway:
                await linux.add_route(ns, "default", via=gateway)
        return Instance(ns, ip, server["id"], port["id"])

    def router_ns(self, router_id: str) -> str:
        return self.l3.manager.namespace(router_id)

    async def redirect_packets(self, router_id: str) -> int:
        counters = await iptables_counters(self.router_ns(router_id), "nat", NAT_CHAIN)
        return sum(c.packets for c in counters)

    async def router_links(self, router_id: str) -> set[str]:
        return {link.name for link in await linux.list_links(self.router_ns(router_id))}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.monitor is not None:
            await self.monitor.close()
        if self.proxies is not None:
            await self.proxies.close()
        if self.metadata_agent is not None:
            await self.metadata_agent.stop()
        ours = linux.list_namespaces(f"cmt-{self.tag}-")
        links = [bridge_port_name(DEVICE_PREFIX, p) for p in self.port_ids]
        links += [bridge_name(DEVICE_PREFIX, n) for n in self.network_ids]
        await linux.cleanup(
            namespaces=ours,
            links=links,
            pid_dir=self.state_dir,
            links_namespace=self.bridge_namespace,
        )
        if self.client is not None:
            await self.client.close()
        await self.runners.aclose()
        if self.store is not None:
            await self.store.close()


async def _serve(cloud: L3Cloud, name: str, config: Config) -> int:
    """Serve the ``name`` API app as ``cloudmeta api`` does; the port it got."""
    assert cloud.store is not None
    return await cloud.runners.enter_async_context(shipped(config, cloud.store, name))


async def start_cloud(
    make_config: Callable[..., Config],
    state_dir: Path,
    *,
    unix_socket: bool = False,
    tag: str = "",
    **overrides: Any,
) -> L3Cloud:
    """The cloud, agents not yet started; ``unix_socket`` serves the metadata agent's socket
    too (what process and haproxy mode proxies forward to); ``tag`` starts the random part of
    every name (a test's own tag)."""
    tag = tag + secrets.token_hex(3)
    overrides.setdefault("bridge_namespace", f"cmt-{tag}-fabric")  # port security needs one
    base = make_config(namespace_prefix=f"cmt-{tag}-", device_prefix=DEVICE_PREFIX, **overrides)
    cloud = L3Cloud(config=base, state_dir=state_dir, tag=tag)
    try:
        cloud.store = await Store.open(base)
        admin_port = await _serve(cloud, "admin", base)
        meta_port = await _serve(cloud, "metadata", base)
        cloud.config = make_config(
            namespace_prefix=f"cmt-{tag}-",
            device_prefix=DEVICE_PREFIX,
            admin_url=f"http://127.0.0.1:{admin_port}",
            nova_metadata_port=meta_port,
            nova_metadata_timeout=5.0,
            **overrides,
        )
        cloud.client = AdminClient(cloud.config)
        cloud.project_id = (await cloud.client.create_project(cloud.ns("project")))["id"]
        cloud.monitor = linux.ProcessMonitor(interval=0.5)
        cloud.proxies, cloud.metadata_agent = await start_embedded(
            cloud.config, cloud.client, cloud.monitor, unix_socket=unix_socket
        )
    except BaseException:
        await cloud.close()
        raise
    return cloud


async def curl(
    namespace: str,
    *,
    max_time: float = 10.0,
    url: str = "",
) -> tuple[int, str, int]:
    """``curl`` inside ``namespace``: (exit code, body, HTTP status)."""
    target = url or f"http://{META_IP}/openstack/latest/meta_data.json"
    argv = ["curl", "-s", "-m", f"{max_time:g}", "-o", "-", "-w", "\n%{http_code}", target]
    result = await linux.run(argv, namespace=namespace, check=False, timeout=max_time + 5)
    body, _, code = result.stdout.rpartition("\n")
    return result.returncode, body, int(code or 0)


def uuid_of(body: str) -> str | None:
    try:
        return str(json.loads(body)["uuid"])
    except (ValueError, KeyError, TypeError):
        return None


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:  # noqa: ASYNC109
    """Poll ``check`` until true; fail with a clear message after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while True:  # the kernel offers no event to wait on here
            if await check():
                return
            await asyncio.sleep(0.1)


__all__ = ["META_IP", "Instance", "L3Cloud", "curl", "interface_name", "start_cloud", "until"]
