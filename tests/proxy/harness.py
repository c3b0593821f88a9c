"""A metadata chain in real namespaces: admin API + metadata API in-process on loopback,
the metadata agent, a proxy (any mode) in a "DHCP" or "router" namespace per network, and an
instance namespace behind a veth with a host route to 169.254.169.254. Used by the tests and
by ``bench/chain.py``. Everything it makes is named ``cmt-<hex>-...`` and removed by close().
"""

from __future__ import annotations

import json
import secrets
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.agent import MetadataAgent
from cloudmeta.config import Config, ProxyMode
from cloudmeta.inventory import Store
from cloudmeta.proxy import MetadataProxyManager
from support.serving import shipped

META_IP = "169.254.169.254"


@dataclass
class Instance:
    namespace: str
    ip: str
    server_id: str
    port_id: str


@dataclass
class Chain:
    """The running chain; build with :func:`start_chain`, always ``await chain.close()``."""

    config: Config
    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    namespaces: list[str] = field(default_factory=list)
    runners: dict[str, AsyncExitStack] = field(default_factory=dict)
    store: Store | None = None
    client: AdminClient | None = None
    agent: MetadataAgent | None = None
    manager: MetadataProxyManager | None = None
    monitor: linux.ProcessMonitor | None = None
    project_id: str = ""

    def name(self, kind: str, index: int) -> str:
        return f"cmt-{self.tag}-{kind}{index}"

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        if self.manager is not None:
            await self.manager.close()
        if self.agent is not None:
            await self.agent.stop()
        if self.client is not None:
            await self.client.close()
        for runner in self.runners.values():
            await runner.aclose()
        if self.store is not None:
            await self.store.close()
        for ns in self.namespaces:
            if linux.namespace_exists(ns):
                linux.delete_namespace(ns)

    # -- pieces ----------------------------------------------------------------------------

    async def serve(self, name: str, config: Config, port: int = 0) -> int:
        """Serve the ``name`` API app as ``cloudmeta api`` does; the port it got."""
        assert self.store is not None
        stack = AsyncExitStack()
        bound = await stack.enter_async_context(shipped(config, self.store, name, port))
        self.runners[name] = stack
        return bound

    async def stop_serving(self, name: str) -> None:
        await self.runners.pop(name).aclose()

    async def add_namespace(self, name: str) -> None:
        linux.create_namespace(name)
        self.namespaces.append(name)

    async def gateway_namespace(self, name: str) -> str:
        """A namespace hosting a proxy: 169.254.169.254 on its loopback (as Neutron puts it on
        the DHCP port; the router case would use iptables REDIRECT instead)."""
        await self.add_namespace(name)
        await linux.set_link(name, "lo", up=True)
        await linux.add_address(name, "lo", f"{META_IP}/32")
        return name

    async def network(self, cidr: str = "192.0.2.0/24") -> tuple[str, str]:
        assert self.client is not None
        net = await self.client.create_network(f"cmt-{self.tag}", project_id=self.project_id)
        subnet = await self.client.create_subnet(net["id"], cidr, project_id=self.project_id)
        return net["id"], subnet["id"]

    async def instance(
        self, index: int, network_id: str, ip: str, gateway_ns: str, gateway: str
    ) -> Instance:
        """A server on ``network_id`` and its namespace, wired to ``gateway_ns``."""
        assert self.client is not None
        server = await self.client.create_server(
            f"cmt-{self.tag}-vm{index}",
            [{"network_id": network_id, "fixed_ip": ip}],
            project_id=self.project_id,
        )
        port = await self.client.get_port(server["ports"][0])
        ns = self.name("i", index)
        await self.add_namespace(ns)
        prefix = 24
        await linux.plug_veth(
            ns,
            "eth0",
            mac=port["mac_address"],
            host_ifname=self.name("g", index),
            bridge_namespace=gateway_ns,
        )
        await linux.add_address(gateway_ns, self.name("g", index), f"{gateway}/{prefix}")
        await linux.add_address(ns, "eth0", f"{ip}/{prefix}")
        await linux.add_route(ns, f"{META_IP}/32", via=gateway)
        return Instance(ns, ip, server["id"], port["id"])


async def curl(
    namespace: str,
    path: str = "/openstack/latest/meta_data.json",
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str = META_IP,
    port: int = 80,
    max_time: float = 15.0,
) -> tuple[int, str]:
    """``curl`` run inside the instance namespace: (status, body). The path is sent as
    given (``--path-as-is``), dot segments and all."""
    argv = ["curl", "-s", "--path-as-is", "-m", f"{max_time:g}", "-X", method, "-o", "-"]
    argv += ["-w", "\n%{http_code}"]
    for name, value in (headers or {}).items():
        argv += ["-H", f"{name}: {value}"]
    netloc = f"[{host}]" if ":" in host else host
    argv.append(f"http://{netloc}:{port}{path}")
    result = await linux.run(argv, namespace=namespace, check=False, timeout=max_time + 5)
    body, _, code = result.stdout.rpartition("\n")
    return int(code or 0), body


def uuid_of(body: str) -> str | None:
    try:
        return str(json.loads(body)["uuid"])
    except (ValueError, KeyError, TypeError):
        return None


async def start_chain(make_config: Any, mode: ProxyMode, **overrides: Any) -> Chain:
    """Store + admin API + metadata API + agent (+ unix socket) + a proxy manager."""
    base = make_config(metadata_proxy_mode=mode, **overrides)
    chain = Chain(config=base)
    try:
        chain.store = await Store.open(base)
        admin_port = await chain.serve("admin", base)
        meta_port = await chain.serve("metadata", base)
        chain.config = make_config(
            metadata_proxy_mode=mode,
            admin_url=f"http://127.0.0.1:{admin_port}",
            nova_metadata_port=meta_port,
            nova_metadata_timeout=3.0,
            **overrides,
        )
        chain.client = AdminClient(chain.config)
        project = await chain.client.create_project(f"cmt-{chain.tag}")
        chain.project_id = project["id"]
        chain.agent = MetadataAgent(chain.config, chain.client)
        await chain.agent.start(unix_socket=True)
        inline = chain.agent.inline if mode is ProxyMode.INLINE else None
        # The proxy children are watched as the agents watch them (respawn every 0.2 s).
        chain.monitor = linux.ProcessMonitor(interval=0.2)
        chain.monitor.start()
        chain.manager = MetadataProxyManager(chain.config, chain.monitor, inline=inline)
    except BaseException:
        await chain.close()
        raise
    return chain
