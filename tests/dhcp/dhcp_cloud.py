"""A small real cloud for the DHCP agent's tests: store (SQLite), admin API and metadata API on
free loopback ports, the embedded metadata agent + proxy manager, a process monitor and the
DHCP agent, all in this process. Instances are namespaces on the network's bridge running our
safe dhclient. Every name is ``cmt-<hex>-...`` (bridges and taps ``cmt-`` + random ids);
``close()`` removes all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.agent import MetadataAgent
from cloudmeta.agent.embedded import start_embedded
from cloudmeta.config import Config
from cloudmeta.dhcp import DhcpAgent
from cloudmeta.inventory import Store
from cloudmeta.linux.names import bridge_name, link_name
from cloudmeta.proxy import MetadataProxyManager
from support.serving import shipped

META_IP = "169.254.169.254"


@dataclass
class Instance:
    namespace: str
    server_id: str
    port_id: str
    mac: str
    ip: str


@dataclass
class DhcpCloud:
    """Build with :func:`start_cloud`; always ``await cloud.close()``."""

    base: Config
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    config: Config | None = None
    store: Store | None = None
    runners: dict[str, AsyncExitStack] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    client: AdminClient | None = None
    metadata_agent: MetadataAgent | None = None
    proxies: MetadataProxyManager | None = None
    monitor: linux.ProcessMonitor | None = None
    agent: DhcpAgent | None = None
    task: asyncio.Task[None] | None = None
    project_id: str = ""
    networks: list[str] = field(default_factory=list)
    instances: list[Instance] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"cmt-{self.tag}-"

    @property
    def dhclient_dir(self) -> Path:
        return self.base.state_path / "dhclient"

    @property
    def fabric(self) -> str:
        """The bridge namespace (port security needs one); removed with the cloud."""
        return f"{self.prefix}fabric"

    @property
    def bridge_namespace(self) -> str | None:
        return (self.config.bridge_namespace if self.config else self.fabric) or None

    def namespace(self, network_id: str) -> str:
        return f"{self.prefix}qdhcp-{network_id}"

    # -- services ----------------------------------------------------------------------------

    async def serve(self, name: str, config: Config, port: int = 0) -> int:
        """Serve the ``name`` API app as ``cloudmeta api`` does; the port it got."""
        assert self.store is not None
        stack = AsyncExitStack()
        self.ports[name] = await stack.enter_async_context(shipped(config, self.store, name, port))
        self.runners[name] = stack
        return self.ports[name]

    async def stop_admin(self) -> None:
        await self.runners.pop("admin").aclose()

    async def start_admin(self) -> None:
        assert self.store is not None and self.config is not None
        await self.serve("admin", self.config, self.ports["admin"])

    async def start_agent(self) -> DhcpAgent:
        assert self.config and self.client and self.proxies and self.monitor
        self.agent = DhcpAgent(self.config, self.client, self.proxies, self.monitor)
        self.task = asyncio.create_task(self.agent.run())
        await self.synced()
        return self.agent

    async def stop_agent(self, *, teardown: bool = False) -> None:
        """Stop the agent; its dnsmasq processes keep running unless ``teardown``."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        if self.agent is not None:
            await self.agent.close(teardown=teardown)
            self.agent = None

    async def synced(self, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until the agent has applied every change made so far."""
        assert self.client is not None and self.agent is not None
        revision = await self.client.revision()
        await self.agent.wait_for_revision(revision, timeout)

    # -- inventory -----------------------------------------------------------------------------

    async def network(self, cidr: str = "192.0.2.0/24", **subnet: Any) -> tuple[str, str]:
        assert self.client is not None
        net = await self.client.create_network(f"{self.prefix}net", project_id=self.project_id)
        self.networks.append(net["id"])
        sub = await self.client.create_subnet(net["id"], cidr, project_id=self.project_id, **subnet)
        await self.synced()
        return net["id"], sub["id"]

    async def router_on(self, subnet_id: str) -> str:
        assert self.client is not None
        router = await self.client.create_router(f"{self.prefix}r", project_id=self.project_id)
        await self.client.add_router_interface(router["id"], subnet_id)
        return router["id"]

    async def server(self, network_id: str) -> tuple[str, dict[str, Any]]:
        assert self.client is not None
        index = len(self.instances) + sum(1 for _ in self.links)
        server = await self.client.create_server(
            f"{self.prefix}vm{index}", [{"network_id": network_id}], project_id=self.project_id
        )
        port = await self.client.get_port(server["ports"][0])
        return server["id"], dict(port)

    async def boot(self, network_id: str) -> Instance:
        """A server, its namespace on the bridge with the port's MAC, and a DHCP lease."""
        server_id, port = await self.server(network_id)
        await self.synced()
        index = len(self.instances)
        instance = Instance(
            f"{self.prefix}vm{index}",
            server_id,
            port["id"],
            port["mac_address"],
            port["fixed_ips"][0]["ip_address"],
        )
        self.instances.append(instance)
        await self.plug(instance, network_id)
        await linux.run_dhclient(
            instance.namespace, "eth0", state_dir=self.dhclient_dir / instance.namespace
        )
        return instance

    async def plug(self, instance: Instance, network_id: str) -> str:
        """The instance's namespace on the network's bridge, through the tap the agent's port
        security filters (``tap`` + port id, as Nova names it)."""
        link = link_name(self.base.device_prefix, "tap", instance.port_id)
        self.links.append(link)
        linux.create_namespace(instance.namespace)
        await linux.plug_veth(
            instance.namespace,
            "eth0",
            mac=instance.mac,
            host_ifname=link,
            bridge=bridge_name(self.base.device_prefix, network_id),
            bridge_namespace=self.bridge_namespace,
        )
        return link

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_agent(teardown=True)
        for name in ("monitor", "proxies"):
            with contextlib.suppress(Exception):
                await getattr(self, name).close()
        if self.metadata_agent is not None:
            await self.metadata_agent.stop()
        await linux.cleanup(
            namespaces=[i.namespace for i in self.instances] + linux.list_namespaces(self.prefix),
            links=self.links,
            links_namespace=self.bridge_namespace,
            pid_dir=self.dhclient_dir,
        )
        pids = self.base.state_path / "external" / "pids"
        await linux.cleanup(pid_dir=pids)
        for network_id in self.networks:
            await linux.delete_link(None, bridge_name(self.base.device_prefix, network_id))
        if self.client is not None:
            await self.client.close()
        for runner in self.runners.values():
            await runner.aclose()
        if self.store is not None:
            await self.store.close()


async def start_cloud(make_config: Any, **overrides: Any) -> DhcpCloud:
    """Everything up and the DHCP agent synced; the caller must ``close()`` it."""
    cloud = DhcpCloud(base=make_config(**overrides))
    try:
        cloud.store = await Store.open(cloud.base)
        await cloud.serve("admin", cloud.base)
        await cloud.serve("metadata", cloud.base)
        overrides.setdefault("bridge_namespace", cloud.fabric)
        cloud.config = make_config(
            namespace_prefix=cloud.prefix,
            admin_url=f"http://127.0.0.1:{cloud.ports['admin']}",
            nova_metadata_port=cloud.ports["metadata"],
            nova_metadata_timeout=5.0,
            **overrides,
        )
        cloud.client = AdminClient(cloud.config)
        project = await cloud.client.create_project(f"{cloud.prefix}p")
        cloud.project_id = project["id"]
        cloud.monitor = linux.ProcessMonitor(
            interval=cloud.config.check_child_processes_interval,
            action=cloud.config.check_child_processes_action.value,
        )
        cloud.proxies, cloud.metadata_agent = await start_embedded(
            cloud.config, cloud.client, cloud.monitor
        )
        await cloud.start_agent()
    except BaseException:
        await cloud.close()
        raise
    return cloud


def uuid_of(body: str) -> str | None:
    try:
        return str(json.loads(body)["uuid"])
    except (ValueError, KeyError, TypeError):
        return None


async def curl_metadata(namespace: str, path: str = "/openstack/latest/meta_data.json") -> str:
    """``curl`` from inside the instance: the body, or '' when nothing answers."""
    argv = ["curl", "-s", "-m", "10", f"http://{META_IP}{path}"]
    result = await linux.run(argv, namespace=namespace, check=False, timeout=15)
    return result.stdout
