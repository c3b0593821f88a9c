"""A multi-node lab's shape as plain data: which hosts, their names, addresses and configs.

All pure: the plumbing (:mod:`.fabric`) and the processes (:mod:`.hosts`) take what these
functions return. The design (docs/multi-host.md): every node's daemons run in the host's
network namespace, on loopback, so they reach the controller's API hosts on 127.0.0.11/12
directly; what makes a node a node is its own ``state_path``, its own name prefix (hence its
own ``qdhcp-``/``qrouter-``/``qmeta-`` namespaces) and its own bridge namespace, whose
``ul0`` sits on the underlay and carries every tenant network as VXLAN.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from cloudmeta.config import AdminSection, Config, DatabaseSection
from cloudmeta.lab.state import LabNode, lab_dir
from cloudmeta.linux.names import link_name

__all__ = [
    "API_HOSTS",
    "UNDERLAY_CIDR",
    "ApiHost",
    "Secrets",
    "api_config",
    "api_hosts",
    "database_name",
    "node_config",
    "node_dir",
    "node_fabric",
    "node_prefix",
    "node_services",
    "plan",
    "underlay_link",
    "underlay_namespace",
    "vni_of",
    "vxlan_link",
]

API_HOSTS = ("127.0.0.11", "127.0.0.12")  # 127.0.0.0/8 routes to lo: nothing to add
UNDERLAY_CIDR = "203.0.113.0/24"  # TEST-NET-3
_FIRST_NODE_HOST = 11
UNDERLAY_IFACE = "ul0"  # a node's underlay port, inside its bridge namespace
UNDERLAY_MTU = 9000  # room for VXLAN's 50 bytes under instances' 1500


@dataclass(frozen=True, slots=True)
class Secrets:
    """What every host of the lab shares: the admin token, the proxy shared secret."""

    admin_token: str
    shared_secret: str


@dataclass(frozen=True, slots=True)
class ApiHost:
    """One metadata API host (``cloudmeta api``: admin API + metadata API)."""

    index: int
    ip: str
    admin_host: str
    admin_port: int
    metadata_port: int

    @property
    def name(self) -> str:
        return f"api-{self.index + 1}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin_host}:{self.admin_port}"


def plan(network_nodes: int, compute_nodes: int) -> list[LabNode]:
    """The nodes, in order: network-1.., then compute-1..; underlay addresses from .11 on."""
    net = ipaddress.ip_network(UNDERLAY_CIDR)
    names = [("network", i) for i in range(network_nodes)]
    names += [("compute", i) for i in range(compute_nodes)]
    return [
        LabNode(
            name=f"{role}-{i + 1}",
            role=role,
            index=n,
            underlay_ip=str(net.network_address + _FIRST_NODE_HOST + n),
        )
        for n, (role, i) in enumerate(names)
    ]


def node_services(node: LabNode) -> list[str]:
    """The ``cloudmeta`` daemons a node runs. Every network node runs a DHCP agent (so every
    network has as many DHCP agents as there are network nodes); the first one alone runs the
    L3 agent: two unscheduled L3 agents would both plug every router's gateway port."""
    if node.role == "network":
        return ["dhcp-agent", "l3-agent"] if node.name == "network-1" else ["dhcp-agent"]
    if node.role == "compute":
        return ["agent"]
    return []


def api_hosts(config: Config) -> list[ApiHost]:
    """The two API hosts; the first one's admin API is the configured one (the CLI's)."""
    port = config.api.metadata_listen_port
    return [
        ApiHost(0, API_HOSTS[0], config.admin.listen, config.admin.port, port),
        ApiHost(1, API_HOSTS[1], API_HOSTS[1], config.admin.port, port),
    ]


def database_name(config: Config) -> str:
    """The lab's private database: ``cmt-lab-<the lab's own prefix tag>``."""
    tag = config.namespace_prefix.removeprefix("cmt-").strip("-") or "main"
    return f"cmt-lab-{tag}"


def node_prefix(config: Config, name: str) -> str:
    return f"{config.namespace_prefix}{name}-"


def node_fabric(config: Config, name: str) -> str:
    """A node's bridge namespace: its networks' bridges, VXLAN devices and underlay port."""
    return f"{node_prefix(config, name)}fabric"


def node_dir(config: Config, name: str) -> Path:
    return lab_dir(config) / "nodes" / name


def underlay_namespace(config: Config) -> str:
    return f"{config.namespace_prefix}underlay"


def underlay_link(config: Config, node: LabNode) -> str:
    """The underlay bridge's end of a node's port (by index: names must stay short)."""
    return f"{config.device_prefix}ul{node.index}"


def vxlan_link(config: Config, network_id: str) -> str:
    return link_name(config.device_prefix, "vx", network_id)


def vni_of(network_id: str) -> int:
    """A network's VNI: 24 bits of its id (fixed for its life; no allocation table needed in
    a lab whose underlay is its own)."""
    return int(network_id.replace("-", "")[:6], 16) or 1


def api_config(config: Config, host: ApiHost, database_url: str, secrets: Secrets) -> Config:
    """An API host's configuration: the shared database, its own loopback address; every
    network scheduled to two DHCP agents (both network nodes), as the multi-node lab shows."""
    return config.model_copy(
        update={
            "state_path": lab_dir(config) / "controller" / host.name,
            "dhcp_agents_per_network": 2,
            "database": DatabaseSection(connection=database_url),
            "admin": AdminSection(listen=host.admin_host, port=host.admin_port),
            "api": config.api.model_copy(
                update={"metadata_listen": host.ip, "metadata_listen_port": host.metadata_port}
            ),
            "admin_url": host.admin_url,
            "admin_token": SecretStr(secrets.admin_token),
            "metadata_proxy_shared_secret": SecretStr(secrets.shared_secret),
            "metrics_listen": "",
        }
    )


def node_config(
    config: Config, node: LabNode, api: ApiHost, secrets: Secrets, *, distributed: bool = True
) -> Config:
    """A node's agents' configuration: own state dir, names and bridge namespace; the API host
    they use; metadata distributed (localports on compute nodes, on-link route from DHCP), or
    with ``distributed=False`` Neutron's way (each DHCP agent pushes the route via its own
    port; routed networks through the router), to compare."""
    return config.model_copy(
        update={
            "state_path": node_dir(config, node.name),
            "namespace_prefix": node_prefix(config, node.name),
            "bridge_namespace": node_fabric(config, node.name),
            "host": node.name,
            "admin_url": api.admin_url,
            "admin_token": SecretStr(secrets.admin_token),
            "metadata_proxy_shared_secret": SecretStr(secrets.shared_secret),
            "nova_metadata_host": api.ip,
            "nova_metadata_port": api.metadata_port,
            "distributed_metadata": distributed,
            "enable_isolated_metadata": not distributed,
            "force_metadata": False,
            "metrics_listen": "",
            "database": DatabaseSection(),
        }
    )
