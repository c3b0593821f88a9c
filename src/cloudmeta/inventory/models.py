"""The inventory's tables: Nova's servers and key pairs; Neutron's networks, ports, routers.

A router interface is not a table of its own but, as in Neutron, a port with
``device_owner = network:router_interface`` and ``device_id = <router id>`` holding the subnet's
gateway address. A server's NICs are likewise the ports whose ``device_id`` is the server's id.
Uniqueness that concurrent writers could break (fixed IPs per subnet, MACs per network) is
enforced by the database, not only by checks in Python.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, foreign, mapped_column, relationship

__all__ = [
    "DEVICE_OWNER_COMPUTE_PREFIX",
    "DEVICE_OWNER_DHCP",
    "DEVICE_OWNER_ROUTER_INTERFACE",
    "Agent",
    "Base",
    "Change",
    "FixedIP",
    "Keypair",
    "Network",
    "NetworkDhcpAgentBinding",
    "Port",
    "Project",
    "Router",
    "RouterL3AgentBinding",
    "Server",
    "ServerMetadata",
    "ServerTag",
    "StoreState",
    "Subnet",
    "new_id",
    "utcnow",
]

DEVICE_OWNER_ROUTER_INTERFACE = "network:router_interface"
DEVICE_OWNER_DHCP = "network:dhcp"
DEVICE_OWNER_COMPUTE_PREFIX = "compute:"

_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=_NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class StoreState(Base):
    """One row: the store-wide revision and how far the change history has been pruned."""

    __tablename__ = "store_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    pruned_through: Mapped[int] = mapped_column(Integer, default=0)


class Change(Base):
    """One changed object at one revision; the agents' feed reads these."""

    __tablename__ = "changes"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    revision: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[str] = mapped_column(String(36))
    op: Mapped[str] = mapped_column(String(8))
    # What else the change touches (see inventory.changes); NULL on rows older than 0003.
    touches: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), unique=True)


class Keypair(Base):
    __tablename__ = "keypairs"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16), default="ssh")


class Network(Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    subnets: Mapped[list[Subnet]] = relationship(
        back_populates="network", lazy="raise", order_by="Subnet.cidr"
    )


class Subnet(Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    ip_version: Mapped[int] = mapped_column(Integer)
    cidr: Mapped[str] = mapped_column(String(64))
    gateway_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
    allocation_pools: Mapped[list[Any]] = mapped_column(default=list)
    dns_nameservers: Mapped[list[Any]] = mapped_column(default=list)
    host_routes: Mapped[list[Any]] = mapped_column(default=list)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ipv6_ra_mode: Mapped[str | None] = mapped_column(String(32), nullable=True)
    network: Mapped[Network] = relationship(back_populates="subnets", lazy="raise")


class Router(Base):
    __tablename__ = "routers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    interfaces: Mapped[list[Port]] = relationship(
        primaryjoin=lambda: and_(
            Router.id == foreign(Port.device_id),
            Port.device_owner == DEVICE_OWNER_ROUTER_INTERFACE,
        ),
        viewonly=True,
        lazy="raise",
        order_by=lambda: Port.created_at,
    )


class Port(Base):
    __tablename__ = "ports"
    # A network's ports of one kind (its DHCP ports for every document built, its router
    # interfaces) by one index, whatever the network's size (migration 0008).
    __table_args__ = (
        UniqueConstraint("network_id", "mac_address"),
        Index("ix_ports_network_id_device_owner", "network_id", "device_owner"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255), default="")
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    mac_address: Mapped[str] = mapped_column(String(17), index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    # Creation order; a server's NICs are listed in the order they were requested.
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    fixed_ips: Mapped[list[FixedIP]] = relationship(
        back_populates="port",
        cascade="all, delete-orphan",
        lazy="raise",
        order_by="FixedIP.seq",
    )
    network: Mapped[Network] = relationship(lazy="raise")


class FixedIP(Base):
    """One address of a port; UNIQUE(subnet, address) makes double booking impossible."""

    __tablename__ = "fixed_ips"
    # The agent's lookup (ip_address + network_id) is answered by this index alone, whatever
    # the number of ports on the network (migration 0002).
    __table_args__ = (
        UniqueConstraint("subnet_id", "ip_address"),
        Index("ix_fixed_ips_ip_address_network_id", "ip_address", "network_id"),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    port_id: Mapped[str] = mapped_column(ForeignKey("ports.id", ondelete="CASCADE"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"))
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"))
    ip_address: Mapped[str] = mapped_column(String(64))
    port: Mapped[Port] = relationship(back_populates="fixed_ips", lazy="raise")
    subnet: Mapped[Subnet] = relationship(lazy="raise")


class Server(Base):
    __tablename__ = "servers"
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"))
    availability_zone: Mapped[str | None] = mapped_column(String(255), nullable=True)
    flavor: Mapped[str] = mapped_column(String(255), default="m1.small")
    image_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    key_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    user_data: Mapped[str | None] = mapped_column(Text, nullable=True)
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Nova's admin password slot (password_0..3 in system_metadata): set once by the instance.
    password: Mapped[str | None] = mapped_column(Text, nullable=True)
    # AWS's instance_metadata_tags: the instance reads its tags in meta-data/tags/instance.
    metadata_tags: Mapped[bool] = mapped_column(
        "instance_metadata_tags", Boolean, default=False, server_default=false()
    )
    # Nova's instances.config_drive: the server asked for a config drive at boot.
    config_drive: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    metadata_items: Mapped[list[ServerMetadata]] = relationship(
        cascade="all, delete-orphan", lazy="raise", order_by="ServerMetadata.key"
    )
    tag_items: Mapped[list[ServerTag]] = relationship(
        cascade="all, delete-orphan", lazy="raise", order_by="ServerTag.tag"
    )
    ports: Mapped[list[Port]] = relationship(
        primaryjoin=lambda: and_(
            Server.id == foreign(Port.device_id),
            Port.device_owner.startswith(DEVICE_OWNER_COMPUTE_PREFIX),
        ),
        viewonly=True,
        lazy="raise",
        order_by=lambda: Port.created_at,
    )
    project: Mapped[Project] = relationship(lazy="raise")

    @property
    def meta(self) -> dict[str, str]:
        return {item.key: item.value for item in self.metadata_items}

    @property
    def tags(self) -> list[str]:
        return [item.tag for item in self.tag_items]


class ServerMetadata(Base):
    __tablename__ = "server_metadata"
    server_id: Mapped[str] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class ServerTag(Base):
    __tablename__ = "server_tags"
    server_id: Mapped[str] = mapped_column(
        ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(60), primary_key=True)


class Agent(Base):
    """A DHCP, L3 or metadata agent as it reported itself (Neutron's ``agents`` table)."""

    __tablename__ = "agents"
    __table_args__ = (UniqueConstraint("agent_type", "host"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_type: Mapped[str] = mapped_column(String(255))
    host: Mapped[str] = mapped_column(String(255))
    configurations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NetworkDhcpAgentBinding(Base):
    """A network served by a DHCP agent (Neutron's ``networkdhcpagentbindings``)."""

    __tablename__ = "network_dhcp_agent_bindings"
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class RouterL3AgentBinding(Base):
    """A router hosted by an L3 agent (Neutron's ``routerl3agentbindings``)."""

    __tablename__ = "router_l3_agent_bindings"
    router_id: Mapped[str] = mapped_column(
        ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True
    )
