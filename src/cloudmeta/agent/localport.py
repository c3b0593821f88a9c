"""Metadata on every compute node for its own instances: one *localport* per network.

OVN's answer to "metadata must survive a network node" (and Neutron's distributed metadata data
path): with ``distributed_metadata`` the DHCP agents push ``169.254.169.254/32`` *on-link*
(option 121 router ``0.0.0.0``), so an instance ARPs for 169.254.169.254 itself, and on its
own compute node a namespace ``<prefix>qmeta-<network>`` on the network's bridge holds that
address and serves it (the metadata agent's inline listener, with the network id as identity).
ebtables in the node's bridge namespace keep it local: the ARP and IP traffic of
169.254.169.254 reaches only the localport, and frames of the localport's MAC (the same on
every node, as OVN's) reach only local instance ports, never the overlay. So no network node
stands in the metadata path at all; losing one costs metadata nothing.

The localport trusts the source address as the DHCP path does, so the node's instance ports
get the same anti-spoofing as on a network node (:class:`~cloudmeta.dhcp.antispoof.
PortSecurity`, the ``nat`` table of the bridge namespace): the compute node is where they are
plugged, so it is where their frames must be checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.adminclient.feed import follow_changes
from cloudmeta.config import Config
from cloudmeta.dhcp.antispoof import PortSecurity
from cloudmeta.dhcp.model import NetworkBundle
from cloudmeta.linux.names import bridge_name, link_name
from cloudmeta.logs import get_logger
from cloudmeta.proxy.manager import MetadataProxyManager

__all__ = [
    "LOCALPORT_MAC",
    "METADATA_IP",
    "LocalportAgent",
    "isolation_rules",
    "localport_link",
    "localport_namespace",
]

_log = get_logger("localport")

METADATA_IP = "169.254.169.254"
# The same on every node (OVN's localport): it never leaves the node, so it never clashes.
LOCALPORT_MAC = "02:a9:fe:a9:fe:fe"
_IFACE = "eth0"
_NAMESPACE_STEM = "qmeta-"
_LINK_STEM = "mp"
_INSTANCE_STEM = "tap"  # instance ports on the bridge: veths and VM taps (Neutron's tap<port>)


def localport_namespace(namespace_prefix: str, network_id: str) -> str:
    """OVN's ``ovnmeta-<network>``: where a node's localport of one network lives."""
    return f"{namespace_prefix}{_NAMESPACE_STEM}{network_id}"


def localport_link(device_prefix: str, network_id: str) -> str:
    """The bridge end of the localport's veth."""
    return link_name(device_prefix, _LINK_STEM, network_id)


def isolation_rules(device_prefix: str) -> str:
    """The bridge namespace's ebtables ``filter`` table: 169.254.169.254 stays on the node.

    Whatever the uplink is (VXLAN, VLAN, a flat NIC): ARP for or from 169.254.169.254 and IP
    to it pass only to/from a localport; the localport's own frames go only to instances.
    """
    local = f"{device_prefix}{_LINK_STEM}+"
    instances = f"{device_prefix}{_INSTANCE_STEM}+"
    return "\n".join(
        [
            "*filter",
            ":INPUT ACCEPT",
            ":FORWARD ACCEPT",
            ":OUTPUT ACCEPT",
            f"-A FORWARD -p ARP -o ! {local} --arp-ip-dst {METADATA_IP} -j DROP",
            f"-A FORWARD -p ARP -i ! {local} --arp-ip-src {METADATA_IP} -j DROP",
            f"-A FORWARD -p IPv4 -o ! {local} --ip-dst {METADATA_IP} -j DROP",
            f"-A FORWARD -s {LOCALPORT_MAC} -o ! {instances} -j DROP",
            "",
        ]
    )


class LocalportAgent:
    """``await LocalportAgent(config, client, proxies).run()``: a localport on every network
    with an IPv4 subnet, following the admin API; stale ones (networks gone) are removed.
    Localports stay when the agent stops (as dnsmasq does); a restarted agent adopts them."""

    def __init__(self, config: Config, client: AdminClient, proxies: MetadataProxyManager) -> None:
        if not config.bridge_namespace:
            raise linux.LinuxError(
                "distributed_metadata needs bridge_namespace: its ebtables rules are only "
                "written inside a namespace of ours, never on the host"
            )
        self._config = config
        self._client = client
        self._proxies = proxies
        self._fabric = config.bridge_namespace
        self._served: dict[str, tuple[str, ...]] = {}
        self._isolated = False
        self._port_security = PortSecurity(self._fabric, config.device_prefix)

    @property
    def networks(self) -> dict[str, str]:
        """Served network id -> its localport namespace."""
        return {n: localport_namespace(self._config.namespace_prefix, n) for n in self._served}

    async def run(self) -> None:
        async for batch in follow_changes(self._client, poll_timeout=10.0):
            try:
                if batch.resync or batch.ids("network") or batch.ids("subnet"):
                    await self.sync_all()
                if batch.resync or batch.ids("port") or batch.ids("server") or batch.ids("network"):
                    await self.secure_ports()
            except (AdminError, linux.LinuxError) as exc:
                _log.warning("localport sync failed; retried on the next change", error=str(exc))

    async def secure_ports(self) -> None:
        """Anti-spoofing for every port of every served network, in this node's bridges."""
        for network_id in list(self._served):
            try:
                bundle = NetworkBundle.from_json(await self._client.get_network_dhcp(network_id))
            except AdminError as exc:
                if exc.status != 404:
                    raise
                await self._port_security.forget(network_id)
                continue
            await self._port_security.update(bundle)

    async def sync_all(self) -> None:
        """Every network with an IPv4 subnet gets its localport; the others lose theirs."""
        subnets = await self._client.list_subnets()
        wanted: dict[str, list[str]] = {}
        for subnet in subnets:
            if ipaddress.ip_network(subnet["cidr"], strict=False).version == 4:
                wanted.setdefault(subnet["network_id"], []).append(subnet["cidr"])
        if not self._isolated:
            await linux.apply_ebtables(self._fabric, isolation_rules(self._config.device_prefix))
            self._isolated = True
        for network_id, cidrs in wanted.items():
            if self._served.get(network_id) != tuple(sorted(cidrs)):
                await self._ensure(network_id, sorted(cidrs))
        stem = localport_namespace(self._config.namespace_prefix, "")
        stale = {ns[len(stem) :] for ns in linux.list_namespaces(stem)} | set(self._served)
        for network_id in stale - set(wanted):
            await self._remove(network_id)

    async def _ensure(self, network_id: str, cidrs: list[str]) -> None:
        namespace = localport_namespace(self._config.namespace_prefix, network_id)
        bridge = bridge_name(self._config.device_prefix, network_id)
        await linux.create_bridge(self._fabric, bridge)
        if not linux.namespace_exists(namespace):
            linux.create_namespace(namespace)
        await linux.set_link(namespace, "lo", up=True)
        await linux.plug_veth(
            namespace,
            _IFACE,
            mac=LOCALPORT_MAC,
            host_ifname=localport_link(self._config.device_prefix, network_id),
            bridge=bridge,
            bridge_namespace=self._fabric,
        )
        await linux.add_address(namespace, _IFACE, f"{METADATA_IP}/32")
        for cidr in cidrs:  # the way back to the instances: on-link, no address of theirs
            await linux.add_route(namespace, cidr, dev=_IFACE)
        await self._proxies.ensure(namespace, network_id=network_id, bind=(METADATA_IP, 80))
        self._served[network_id] = tuple(cidrs)
        _log.info("localport serving", network_id=network_id, namespace=namespace)

    async def _remove(self, network_id: str) -> None:
        namespace = localport_namespace(self._config.namespace_prefix, network_id)
        await self._proxies.remove(namespace)
        await self._port_security.forget(network_id)
        await linux.cleanup(
            namespaces=[namespace],
            links=[localport_link(self._config.device_prefix, network_id)],
            links_namespace=self._fabric,
        )
        self._served.pop(network_id, None)
        _log.info("localport removed", network_id=network_id)

    async def close(self) -> None:
        """Stop serving (the listeners close with the agent); the namespaces stay."""
        for namespace in self.networks.values():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._proxies.remove(namespace))
