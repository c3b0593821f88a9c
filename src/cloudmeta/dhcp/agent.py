"""The DHCP agent (neutron-dhcp-agent): one qdhcp namespace, port and dnsmasq per network.

Every change converges one network on what the admin API says (``_converge``): DHCP port,
interface, files, dnsmasq (adopted, reloaded or restarted), metadata proxy. A full sync at start
and after the admin API comes back also removes what belongs to networks that are gone. A
network that fails is retried with backoff; the others keep being served.

The agent serves only the networks the admin API scheduled to it: it registers (as
``host``) before its first full sync, reports every ``report_interval`` seconds, and rereads
its own record whenever the feed says its share changed; a network moved away is torn down
here (its DHCP port now belongs to the agent that took it over).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from cloudmeta import linux
from cloudmeta.adminclient import (
    AdminClient,
    AdminError,
    AgentReporter,
    ChangeBatch,
    follow_changes,
)
from cloudmeta.config import Config
from cloudmeta.dhcp.antispoof import PortSecurity
from cloudmeta.dhcp.decisions import (
    MetadataPolicy,
    dhcp_ips_by_subnet,
    interface_cidrs,
    should_enable_metadata,
    subnet_signature,
)
from cloudmeta.dhcp.device import DhcpDevice, destroy_device, setup_device
from cloudmeta.dhcp.driver import DhcpError, Dnsmasq, dhcp_namespace
from cloudmeta.dhcp.model import (
    DHCP_DEVICE_OWNER,
    METADATA_V4_IP,
    BundleError,
    NetworkBundle,
    Port,
)
from cloudmeta.dhcp.render import allocations
from cloudmeta.linux.names import bridge_name
from cloudmeta.logs import get_logger
from cloudmeta.metrics import FEED_APPLY, FEED_REVISION
from cloudmeta.proxy import MetadataProxyManager, ProxyError
from cloudmeta.scheduler import AGENT_TYPE_DHCP, dhcp_device_id

__all__ = ["DhcpAgent"]

_log = get_logger("dhcp")
_FEED_APPLY = FEED_APPLY.labels("dhcp-agent")
_FEED_REVISION = FEED_REVISION.labels("dhcp-agent")
MIN_BACKOFF = 1.0
MAX_BACKOFF = 60.0
METADATA_PORT = 80
# Port ids per bulk lookup: ~40 bytes each keeps the URL well under aiohttp's 8 KiB line limit.
PORT_LOOKUP_CHUNK = 100


@dataclass(slots=True)
class _Served:
    """What the agent runs for one network."""

    dnsmasq: Dnsmasq
    device: DhcpDevice
    signature: tuple[object, ...]
    subnet_ids: frozenset[str]
    port_ids: frozenset[str]
    metadata: bool


@dataclass(slots=True)
class _Retry:
    due: float
    delay: float


class DhcpAgent:
    """``await DhcpAgent(config, client, proxy_manager, monitor).run()`` serves until cancelled.

    ``monitor`` is shared with whoever else watches processes; the agent registers each
    dnsmasq with it and starts it. Bridges live in ``bridge_namespace`` (default: the config's;
    empty = the host), where the agent also keeps the ports' anti-spoofing rules.
    """

    def __init__(
        self,
        config: Config,
        client: AdminClient,
        proxy_manager: MetadataProxyManager,
        monitor: linux.ProcessMonitor,
        *,
        bridge_namespace: str | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._proxy = proxy_manager
        self._monitor = monitor
        self._bridge_namespace = bridge_namespace or config.bridge_namespace or None
        self._port_security = PortSecurity(self._bridge_namespace, config.device_prefix)
        self._policy = MetadataPolicy.of(config)
        self._served: dict[str, _Served] = {}
        self._retry: dict[str, _Retry] = {}
        self._lock = asyncio.Lock()
        self._revision = -1
        self._resync_pending = False
        self._applied = asyncio.Condition()
        self.reporter = AgentReporter(
            client,
            AGENT_TYPE_DHCP,
            config.host,
            config.report_interval,
            {"dhcp_driver": "dnsmasq", "namespace_prefix": config.namespace_prefix},
        )
        self._hosted: set[str] = set()
        self._neighbours_warned = False

    # -- public surface ----------------------------------------------------------------------

    @property
    def networks(self) -> dict[str, str]:
        """Served network id -> its namespace."""
        return {nid: s.dnsmasq.namespace for nid, s in self._served.items()}

    def dnsmasq(self, network_id: str) -> Dnsmasq | None:
        served = self._served.get(network_id)
        return served.dnsmasq if served else None

    def device(self, network_id: str) -> DhcpDevice | None:
        served = self._served.get(network_id)
        return served.device if served else None

    async def wait_for_revision(self, revision: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until the agent has applied the admin API's changes up to ``revision``."""
        async with asyncio.timeout(timeout), self._applied:
            await self._applied.wait_for(lambda: self._revision >= revision)

    async def run(self) -> None:
        """Follow the admin API forever: full sync first (and after any gap), then changes."""
        self._monitor.start()
        # Dead dnsmasq and proxy children are the ProcessMonitor's alone (respawn | exit).
        helpers = [
            asyncio.create_task(self._retry_loop(), name="dhcp-retry"),
            asyncio.create_task(self.reporter.run(), name="dhcp-report"),
        ]
        try:
            async for batch in follow_changes(self._client, poll_timeout=10.0):
                started = time.perf_counter()
                if batch.resync:
                    await self.sync_all()
                else:
                    async with self._lock:
                        await self._apply(batch)
                async with self._applied:
                    self._revision = batch.revision
                    self._applied.notify_all()
                _FEED_APPLY.observe(time.perf_counter() - started)
                _FEED_REVISION.set(batch.revision)
        finally:
            for task in helpers:
                task.cancel()
            for task in helpers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def sync_all(self) -> None:
        """Converge every network scheduled here; tear down the others."""
        async with self._lock:
            try:
                wanted = set((await self.reporter.refresh())["networks"])
            except AdminError as exc:
                _log.warning("admin API unreachable; full sync postponed", error=str(exc))
                self._resync_pending = True
                return
            self._resync_pending = False
            self._hosted = wanted
            _log.info("full sync", networks=len(wanted))
            for network_id in sorted(wanted):
                await self._sync_one(network_id)
            for network_id in set(self._served) - wanted:
                await self._teardown(network_id)
            await self._clean_stale_namespaces(wanted)

    async def sync_network(self, network_id: str) -> None:
        """Converge one network; on failure log it and schedule a retry with backoff."""
        async with self._lock:
            await self._sync_one(network_id)

    async def teardown_network(self, network_id: str) -> None:
        """Stop dnsmasq and the proxy, remove interface, namespace and files."""
        async with self._lock:
            await self._teardown(network_id)

    async def _sync_one(self, network_id: str) -> None:
        if network_id not in self._hosted:
            if network_id in self._served or _namespace_exists(self._config, network_id):
                _log.info("network scheduled elsewhere", network_id=network_id)
                await self._teardown(network_id)
            return
        try:
            await self._converge(network_id)
        except (DhcpError, BundleError, ProxyError, linux.LinuxError, AdminError) as exc:
            retry = self._retry.get(network_id)
            delay = min(MAX_BACKOFF, retry.delay * 2) if retry else MIN_BACKOFF
            self._retry[network_id] = _Retry(time.monotonic() + delay, delay)
            _log.error(
                "network not served; will retry",
                network_id=network_id,
                error=str(exc),
                retry_in=delay,
            )
        else:
            self._retry.pop(network_id, None)

    async def _teardown(self, network_id: str) -> None:
        served = self._served.pop(network_id, None)
        self._retry.pop(network_id, None)
        await self._port_security.forget(network_id)
        dnsmasq = served.dnsmasq if served else Dnsmasq(self._config, network_id, self._monitor)
        namespace = dnsmasq.namespace
        await dnsmasq.stop()
        await self._proxy.remove(namespace)
        if served is not None:
            await destroy_device(served.device)
        await _kill_and_delete_namespace(namespace)
        dnsmasq.remove_files()
        _log.info("network torn down", network_id=network_id, namespace=namespace)

    async def close(self, *, teardown: bool = False) -> None:
        """Forget the networks; dnsmasq keeps running (adopted by the next agent) unless
        ``teardown``."""
        for network_id in list(self._served):
            if teardown:
                await self.teardown_network(network_id)
            else:
                self._monitor.unregister("dnsmasq", network_id)
        self._served.clear()

    # -- change handling -----------------------------------------------------------------------

    async def _apply(self, batch: ChangeBatch) -> None:
        """Converge each network the batch touches once: one hosts-file rewrite and at most one
        dnsmasq reload per network per batch, however many of its ports changed."""
        networks: set[str] = set()
        if self.reporter.concerns(batch):
            try:
                hosted = set((await self.reporter.refresh())["networks"])
            except AdminError as exc:
                _log.warning("cannot read this agent's networks; full resync", error=str(exc))
                self._resync_pending = True
            else:
                networks |= hosted ^ self._hosted
                self._hosted = hosted
        port_ids = sorted({c["id"] for c in batch.changes if c["kind"] == "port"})
        try:
            networks |= await self._networks_of_ports(port_ids)
        except AdminError as exc:
            _log.warning("cannot place port changes; full resync", error=str(exc))
            self._resync_pending = True
        for change in batch.changes:
            if change["kind"] == "port":
                continue
            try:
                networks |= await self._networks_of(change["kind"], change["id"])
            except AdminError as exc:
                _log.warning("cannot place a change; full resync", error=str(exc))
                self._resync_pending = True
        for network_id in sorted(networks):
            await self._sync_one(network_id)

    async def _networks_of_ports(self, port_ids: list[str]) -> set[str]:
        """The networks of changed ports: served ones we know, the others asked in bulk
        (``GET /v1/ports?id=...``, PORT_LOOKUP_CHUNK ids a request) rather than one GET each;
        a deleted port is not listed and only matters where we served it."""
        wanted = set(port_ids)
        known = {nid for nid, s in self._served.items() if not wanted.isdisjoint(s.port_ids)}
        for low in range(0, len(port_ids), PORT_LOOKUP_CHUNK):
            chunk = port_ids[low : low + PORT_LOOKUP_CHUNK]
            known |= {p["network_id"] for p in await self._client.list_ports(id=chunk)}
        return known

    async def _networks_of(self, kind: str, object_id: str) -> set[str]:
        """Which networks a change can affect (known ones first, else ask the admin API)."""
        if kind == "network":
            return {object_id}
        if kind not in ("subnet", "router"):  # ports: _networks_of_ports
            return set()
        known = {nid for nid, s in self._served.items() if object_id in s.subnet_ids}
        try:
            if kind == "subnet":
                known.add((await self._client.get_subnet(object_id))["network_id"])
            else:
                router = await self._client.get_router(object_id)
                known |= {i["network_id"] for i in router["interfaces"]}
        except AdminError as exc:
            if exc.status != 404:
                raise
        return known

    # -- one network --------------------------------------------------------------------------

    async def _fetch(self, network_id: str) -> NetworkBundle | None:
        try:
            data = await self._client.get_network_dhcp(network_id)
        except AdminError as exc:
            if exc.status == 404:
                return None
            raise
        return NetworkBundle.from_json(dict(data))

    async def _converge(self, network_id: str) -> None:
        bundle = await self._fetch(network_id)
        if bundle is None or not bundle.dhcp_subnets:
            if network_id in self._served or _namespace_exists(self._config, network_id):
                await self._release_port(bundle)
                await self._teardown(network_id)
            return
        port, bundle = await self._ensure_port(bundle)
        served = self._served.get(network_id)
        device = DhcpDevice.for_port(
            dhcp_namespace(self._config, network_id),
            self._config.device_prefix,
            port.id,
            bridge_name(self._config.device_prefix, network_id),
            self._bridge_namespace,
        )
        if served is not None and served.device != device:
            await destroy_device(served.device)  # the DHCP port was replaced
        metadata = should_enable_metadata(bundle, self._policy)
        await setup_device(
            device, bundle, port.mac_address, interface_cidrs(bundle, port, self._policy)
        )
        await self._port_security.update(bundle)  # before dnsmasq lists a new port
        for skipped in allocations(bundle)[1]:
            _log.warning(
                "port address not served by DHCP",
                network_id=network_id,
                port_id=skipped.port_id,
                ip=skipped.ip,
                reason=skipped.reason,
            )
        dnsmasq = served.dnsmasq if served else Dnsmasq(self._config, network_id, self._monitor)
        changed = dnsmasq.write_files(bundle, dhcp_ips_by_subnet(bundle, port), device.ifname)
        signature = subnet_signature(bundle, self._config.host)
        command = dnsmasq.command(bundle, device.ifname)
        restart = served is not None and served.signature != signature
        outcome = await dnsmasq.ensure(command, restart=restart)
        if outcome == "adopted" and changed:
            dnsmasq.reload()
        self._served[network_id] = _Served(
            dnsmasq=dnsmasq,
            device=device,
            signature=signature,
            subnet_ids=frozenset(s.id for s in bundle.subnets),
            port_ids=frozenset(p.id for p in bundle.ports),
            metadata=metadata,
        )
        self._check_neighbour_table()
        await self._metadata_proxy(bundle, device, metadata)

    def _check_neighbour_table(self) -> None:
        """Warn once when the ports served outgrow the host's neighbour table: each needs an
        entry in its DHCP namespace, and past ``gc_thresh3`` dnsmasq's offers are lost with
        only dnsmasq's syslog saying so (a boot storm of 1 000: bench/README.md)."""
        ports = sum(len(served.port_ids) for served in self._served.values())
        limit = linux.neighbour_table_limit()
        if self._neighbours_warned or limit is None or ports <= limit:
            return
        self._neighbours_warned = True
        _log.warning(
            "more ports served than the host's neighbour table holds: DHCP offers and ARP "
            "answers will be lost; raise net.ipv4.neigh.default.gc_thresh3 (and gc_thresh2) "
            "on this host above the number of ports",
            ports=ports,
            gc_thresh3=limit,
        )

    async def _metadata_proxy(self, bundle: NetworkBundle, device: DhcpDevice, on: bool) -> None:
        if not on:
            await self._proxy.remove(device.namespace)
            return
        has_v6 = any(s.ip_version == 6 for s in bundle.dhcp_subnets)
        await self._proxy.ensure(
            device.namespace,
            network_id=bundle.network.id,
            bind=(METADATA_V4_IP, METADATA_PORT),
            ipv6_interface=device.ifname if has_v6 else None,
        )

    async def _ensure_port(self, bundle: NetworkBundle) -> tuple[Port, NetworkBundle]:
        """This agent's DHCP port with an address on every DHCP subnet (reused if it has)."""
        port = bundle.dhcp_port(self._config.host)
        wanted = {s.id for s in bundle.dhcp_subnets}
        if port is not None and wanted <= {f.subnet_id for f in port.fixed_ips}:
            return port, bundle
        if port is not None:  # subnets were added: the admin API has no port update
            _log.info("replacing DHCP port for new subnets", port_id=port.id)
            await self._client.delete_port(port.id)
        await self._client.create_port(
            bundle.network.id,
            name="",
            device_owner=DHCP_DEVICE_OWNER,
            device_id=dhcp_device_id(bundle.network.id, self._config.host),
            fixed_ips=[{"subnet_id": s.id} for s in bundle.dhcp_subnets],
        )
        fresh = await self._fetch(bundle.network.id)
        port = fresh.dhcp_port(self._config.host) if fresh else None
        if fresh is None or port is None:
            raise DhcpError(f"network {bundle.network.id}: the DHCP port vanished after creation")
        _log.info("DHCP port created", network_id=fresh.network.id, port_id=port.id)
        return port, fresh

    async def _release_port(self, bundle: NetworkBundle | None) -> None:
        port = bundle.dhcp_port(self._config.host) if bundle else None
        if port is not None:
            with contextlib.suppress(AdminError):
                await self._client.delete_port(port.id)

    # -- background duties ----------------------------------------------------------------------

    async def _retry_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self._resync_pending:
                await self.sync_all()
            now = time.monotonic()
            for network_id, retry in list(self._retry.items()):
                if retry.due <= now:
                    await self.sync_network(network_id)

    async def _clean_stale_namespaces(self, wanted: set[str]) -> None:
        stem = f"{self._config.namespace_prefix}qdhcp-"
        for namespace in linux.list_namespaces(stem):
            network_id = namespace[len(stem) :]
            if network_id not in wanted and network_id not in self._served:
                _log.info("removing stale namespace", namespace=namespace)
                await self._teardown(network_id)


def _namespace_exists(config: Config, network_id: str) -> bool:
    return linux.namespace_exists(dhcp_namespace(config, network_id))


async def _kill_and_delete_namespace(namespace: str) -> None:
    """Stop whatever still runs inside (a stale dnsmasq), then remove the namespace."""
    for pid in linux.namespace_pids(namespace):
        await linux.stop_pid(pid)
    linux.delete_namespace(namespace)
