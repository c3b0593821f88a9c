"""The plain records the document builders read: what Nova's InstanceMetadata gets from its DB.

They are frozen and nested (a port holds its network, a fixed IP its subnet) so a builder needs
nothing but one :class:`Instance`. The metadata API fills them from the inventory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "Device",
    "FixedIp",
    "Instance",
    "Keypair",
    "Network",
    "Port",
    "Route",
    "Settings",
    "Subnet",
]


@dataclass(frozen=True, slots=True)
class Keypair:
    name: str
    public_key: str
    type: str = "ssh"


@dataclass(frozen=True, slots=True)
class Route:
    destination: str
    nexthop: str


@dataclass(frozen=True, slots=True)
class Subnet:
    """A Neutron subnet; ``dhcp_server`` is what Nova puts in the subnet's meta (DHCP port IP,
    or the gateway when DHCP is enabled but no DHCP port exists yet, else None)."""

    id: str
    network_id: str
    ip_version: int
    cidr: str
    gateway_ip: str | None = None
    dns_nameservers: tuple[str, ...] = ()
    host_routes: tuple[Route, ...] = ()
    enable_dhcp: bool = True
    ipv6_address_mode: str | None = None
    dhcp_server: str | None = None


@dataclass(frozen=True, slots=True)
class Network:
    id: str
    name: str = ""
    mtu: int | None = None


@dataclass(frozen=True, slots=True)
class FixedIp:
    ip_address: str
    subnet: Subnet


@dataclass(frozen=True, slots=True)
class Port:
    """One VIF of the instance; ``devname`` defaults to Nova's ``tap<port id[:11]>``."""

    id: str
    network: Network
    mac_address: str
    fixed_ips: tuple[FixedIp, ...] = ()
    vif_type: str = "bridge"
    devname: str | None = None

    @property
    def link_name(self) -> str:
        return self.devname or f"tap{self.id[:11]}"


@dataclass(frozen=True, slots=True)
class Device:
    """Tagged device metadata (Nova's ``device_metadata``): type nic, disk or share."""

    type: str
    bus: str = "none"
    address: str = "none"
    tags: tuple[str, ...] = ()
    mac: str | None = None
    vlan: int | None = None
    vf_trusted: bool | None = None
    serial: str | None = None
    path: str | None = None
    share_id: str | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    """One server with everything the documents show about it."""

    id: str
    name: str
    hostname: str
    project_id: str
    availability_zone: str | None = None
    flavor: str = ""
    image_id: str = ""
    key_name: str | None = None
    keypairs: tuple[Keypair, ...] = ()
    user_data: bytes | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    launch_index: int = 0
    created_at: datetime | None = None
    ports: tuple[Port, ...] = ()
    security_groups: tuple[str, ...] = ("default",)
    devices: tuple[Device, ...] = ()
    dedicated_cpus: tuple[int, ...] = ()
    floating_ips: tuple[str, ...] = ()
    root_device_name: str = "/dev/vda"
    password: str | None = None
    # Server tags (Nova's are plain strings; its meta_data.json has none of them), shown in
    # the EC2 tree as AWS's meta-data/tags/instance only when metadata_tags is on.
    tags: tuple[str, ...] = ()
    metadata_tags: bool = False

    def fixed_ips(self, version: int) -> list[str]:
        return [
            ip.ip_address
            for port in self.ports
            for ip in port.fixed_ips
            if ip.subnet.ip_version == version
        ]


@dataclass(frozen=True, slots=True)
class Settings:
    """Deployment-wide inputs (Nova's ``[api]`` options) the builders need."""

    dhcp_domain: str = "novalocal"
    vendordata_providers: tuple[str, ...] = ("StaticJSON",)
    static_vendordata: Mapping[str, object] = field(default_factory=dict)
    region: str = "RegionOne"
