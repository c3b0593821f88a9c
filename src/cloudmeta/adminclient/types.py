"""The admin API's JSON objects as typed dicts (field names exactly as in docs/interfaces.md)."""

from __future__ import annotations

from typing import NotRequired, TypedDict

__all__ = [
    "Agent",
    "AllocationPool",
    "Change",
    "DhcpInfo",
    "FixedIP",
    "HostRoute",
    "Keypair",
    "Network",
    "Port",
    "Project",
    "Router",
    "RouterInterface",
    "Server",
    "ServerAddress",
    "Subnet",
]


class Project(TypedDict):
    id: str
    name: str


class Keypair(TypedDict, total=False):
    id: str
    name: str
    project_id: str
    public_key: str
    fingerprint: str
    type: str
    private_key: str  # only in the answer to a create that generated the key


class Network(TypedDict):
    id: str
    name: str
    project_id: str
    mtu: int


class AllocationPool(TypedDict):
    start: str
    end: str


class HostRoute(TypedDict):
    destination: str
    nexthop: str


class Subnet(TypedDict):
    id: str
    name: str
    network_id: str
    project_id: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    allocation_pools: list[AllocationPool]
    dns_nameservers: list[str]
    host_routes: list[HostRoute]
    enable_dhcp: bool
    ipv6_address_mode: str | None
    ipv6_ra_mode: str | None


class FixedIP(TypedDict):
    subnet_id: str
    ip_address: str


class Port(TypedDict):
    id: str
    name: str
    network_id: str
    project_id: str
    mac_address: str
    fixed_ips: list[FixedIP]
    device_owner: str
    device_id: str


class RouterInterface(TypedDict):
    port_id: str
    subnet_id: str
    network_id: str
    ip_address: str


class Router(TypedDict):
    id: str
    name: str
    project_id: str
    interfaces: list[RouterInterface]


# Nova's key names carry ':' and '-', hence the functional form.
ServerAddress = TypedDict(
    "ServerAddress",
    {
        "addr": str,
        "version": int,
        "OS-EXT-IPS-MAC:mac_addr": str,
        "OS-EXT-IPS:type": str,  # always "fixed": cloudmeta has no floating IPs
    },
)


class Server(TypedDict):
    id: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str | None
    flavor: str
    image_id: str | None
    key_name: str | None
    user_data: str | None
    metadata: dict[str, str]
    launch_index: int
    config_drive: bool
    created_at: str
    tags: list[str]
    instance_metadata_tags: str  # "enabled" | "disabled"
    ports: list[str]
    addresses: dict[str, list[ServerAddress]]  # network name -> its addresses, as Nova's


class Change(TypedDict):
    revision: int
    kind: str
    id: str
    op: str
    # What else it touches: network_ids, subnet_ids, port_ids, device_ids, device_owners,
    # mac_addresses, ip_addresses, project_ids, names (old and new values). Absent from
    # records written before migration 0003 (or by an older server): could concern anyone.
    touches: NotRequired[dict[str, list[str]]]


class DhcpInfo(TypedDict):
    network: Network
    subnets: list[Subnet]
    ports: list[Port]
    routers: list[str]


class Agent(TypedDict):
    id: str
    agent_type: str
    host: str
    alive: bool
    configurations: dict[str, object]
    created_at: str
    started_at: str
    heartbeat_at: str
    networks: list[str]  # served as a DHCP agent
    routers: list[str]  # hosted as an L3 agent
