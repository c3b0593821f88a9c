"""Builds, updates and removes one router's namespace: links, addresses, rules and proxy.

All kernel work goes through :mod:`cloudmeta.linux`; this module decides what to ask for, from
a :class:`~cloudmeta.l3.model.Router`. Every step is idempotent, so ``ensure`` is also how a
half-built router (a failure mid-way) is finished on the next try.
"""

from __future__ import annotations

from typing import Protocol

from cloudmeta.config import Config
from cloudmeta.l3.model import (
    NAMESPACE_STEM,
    L3Error,
    Router,
    bridge_port_name,
    interface_name,
    interface_prefix,
    router_namespace,
)
from cloudmeta.l3.rules import METADATA_V6_CIDR, metadata_chains
from cloudmeta.linux import ip, iptables, netns
from cloudmeta.linux.cleanup import cleanup
from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.names import bridge_name
from cloudmeta.logs import get_logger

__all__ = ["ProxyManager", "RouterManager"]

log = get_logger("l3")


class ProxyManager(Protocol):
    """The part of :class:`cloudmeta.proxy.MetadataProxyManager` the L3 agent uses."""

    async def ensure(
        self, namespace: str, *, router_id: str, bind: tuple[str, int], ipv6_any: bool = ...
    ) -> object: ...

    async def remove(self, namespace: str) -> object: ...


class RouterManager:
    """One router namespace per router, named with ``config.namespace_prefix``.

    The networks' bridges live in ``bridge_namespace`` (the host by default), as for the DHCP
    agent; a missing bridge is created, and never deleted here (instances use it too).
    """

    def __init__(
        self, config: Config, proxy_manager: ProxyManager, *, bridge_namespace: str | None = None
    ) -> None:
        self._config = config
        self._bridge_ns = bridge_namespace or config.bridge_namespace or None
        self._proxies = proxy_manager
        self._device_prefix = config.device_prefix
        self._qr = interface_prefix(config.device_prefix)

    def namespace(self, router_id: str) -> str:
        return router_namespace(self._config.namespace_prefix, router_id)

    def existing_router_ids(self) -> set[str]:
        """Routers that have a namespace on this host (built by us, maybe by a past run)."""
        stem = self._config.namespace_prefix + NAMESPACE_STEM
        return {name[len(stem) :] for name in netns.list_namespaces(stem)}

    async def ensure(self, router: Router) -> None:
        """Make the namespace match ``router``; raise L3Error saying which step failed."""
        ns = self.namespace(router.id)
        try:
            netns.create_namespace(ns)
            netns.set_sysctl(ns, "net.ipv4.ip_forward", 1)
            await self._ensure_interfaces(ns, router)
            port = self._config.metadata_port
            await iptables.apply_iptables(ns, metadata_chains(self._qr, port))
            await iptables.apply_iptables(ns, metadata_chains(self._qr, port, ipv6=True), ipv6=True)
        except (LinuxError, OSError) as exc:
            raise L3Error(f"cannot build router {router.id} in namespace {ns}: {exc}") from exc
        await self._proxies.ensure(
            ns, router_id=router.id, bind=("0.0.0.0", self._config.metadata_port), ipv6_any=True
        )

    async def _ensure_interfaces(self, ns: str, router: Router) -> None:
        wanted = {interface_name(self._device_prefix, i.port_id): i for i in router.interfaces}
        for link in await ip.list_links(ns):
            if link.name.startswith(self._qr) and link.name not in wanted:
                log.info("unplugging router interface", router_id=router.id, interface=link.name)
                await ip.delete_link(ns, link.name)
        for name, port in wanted.items():
            bridge = bridge_name(self._device_prefix, port.network_id)
            await ip.create_bridge(self._bridge_ns, bridge)
            await ip.plug_veth(
                ns,
                name,
                mac=port.mac_address,
                host_ifname=bridge_port_name(self._device_prefix, port.port_id),
                bridge=bridge,
                bridge_namespace=self._bridge_ns,
            )
            present = {a.cidr for a in await ip.list_addresses(ns, name) if a.scope == 0}
            want = {str(a) for a in port.addresses}
            for cidr in sorted(present - want):
                await ip.delete_address(ns, name, cidr)
            for cidr in sorted(want - present):
                await ip.add_address(ns, name, cidr)
            # fe80::a9fe:a9fe answers the instance's neighbour solicitation (never tentative).
            await ip.add_address(ns, name, METADATA_V6_CIDR, nodad=True)

    async def remove(self, router_id: str) -> None:
        """Stop the proxy, unplug the interfaces, delete the namespace (idempotent); processes
        still inside (a proxy started by an earlier run of the agent) are stopped.

        The proxy goes first: an inline listener's socket keeps the namespace (and with it the
        interfaces) alive after ``/run/netns/<name>`` is gone.
        """
        ns = self.namespace(router_id)
        await self._proxies.remove(ns)
        try:
            if netns.namespace_exists(ns):
                for link in await ip.list_links(ns):
                    if link.name.startswith(self._qr):
                        await ip.delete_link(ns, link.name)
            # Stops what still runs inside (a proxy left by an earlier run), then deletes it.
            await cleanup(namespaces=[ns])
        except (LinuxError, OSError) as exc:
            raise L3Error(f"cannot remove router {router_id} (namespace {ns}): {exc}") from exc
