"""Reads of the inventory, each in a few queries with everything its caller needs loaded.

Relationships are ``lazy="raise"``: a read states what it loads, so no query hides in an
attribute access (which async sessions could not run anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cloudmeta.inventory.errors import Invalid, NotFound
from cloudmeta.inventory.models import (
    DEVICE_OWNER_COMPUTE_PREFIX,
    DEVICE_OWNER_ROUTER_INTERFACE,
    Base,
    FixedIP,
    Keypair,
    Network,
    Port,
    Project,
    Router,
    Server,
    Subnet,
)
from cloudmeta.inventory.views import port_views_of_rows

__all__ = [
    "PORT_FILTERS",
    "ServerBundle",
    "find_port_views",
    "find_ports",
    "get",
    "load_server_bundle",
    "port_options",
    "router_options",
    "server_options",
    "servers_by_ip",
]

M = TypeVar("M", bound=Base)
PORT_FILTERS = ("network_id", "ip_address", "mac_address", "device_id", "device_owner", "id")


def port_options() -> list[Any]:
    return [selectinload(Port.fixed_ips)]


def router_options() -> list[Any]:
    return [selectinload(Router.interfaces).selectinload(Port.fixed_ips)]


def server_options() -> list[Any]:
    return [
        selectinload(Server.metadata_items),
        selectinload(Server.tag_items),
        # The view's ``addresses``: each port's fixed IPs and its network's name.
        selectinload(Server.ports).selectinload(Port.fixed_ips),
        selectinload(Server.ports).selectinload(Port.network),
    ]


async def get(
    session: AsyncSession, model: type[M], object_id: str, *options: Any, field_name: str = ""
) -> M:
    """The object with this id, or NotFound naming the field and the id."""
    # populate_existing: an object already in the session gets the requested loads too.
    found = await session.get(model, object_id, options=list(options), populate_existing=True)
    if found is None:
        kind = model.__tablename__.rstrip("s")
        raise NotFound(f"{field_name or kind + '_id'}: no {kind} with id {object_id!r}")
    return found


@dataclass
class ServerBundle:
    """A server and everything the metadata documents read about it."""

    server: Server
    project: Project
    keypair: Keypair | None
    ports: list[Port]
    networks: dict[str, Network] = field(default_factory=dict)
    subnets: dict[str, Subnet] = field(default_factory=dict)

    @property
    def metadata(self) -> dict[str, str]:
        return self.server.meta

    @property
    def tags(self) -> list[str]:
        return self.server.tags


async def load_server_bundle(session: AsyncSession, server_id: str) -> ServerBundle | None:
    server = await session.scalar(
        select(Server)
        .where(Server.id == server_id)
        .options(
            selectinload(Server.project),
            selectinload(Server.metadata_items),
            selectinload(Server.tag_items),
            selectinload(Server.ports).selectinload(Port.fixed_ips).selectinload(FixedIP.subnet),
            selectinload(Server.ports).selectinload(Port.network).selectinload(Network.subnets),
        )
    )
    if server is None:
        return None
    keypair = None
    if server.key_name:
        keypair = await session.scalar(
            select(Keypair).where(
                Keypair.project_id == server.project_id, Keypair.name == server.key_name
            )
        )
    bundle = ServerBundle(server, server.project, keypair, list(server.ports))
    for port in bundle.ports:
        bundle.networks[port.network_id] = port.network
        for subnet in port.network.subnets:
            bundle.subnets[subnet.id] = subnet
    return bundle


async def servers_by_ip(session: AsyncSession, ip_address: str) -> Sequence[Server]:
    rows = await session.scalars(
        select(Server)
        .join(Port, Port.device_id == Server.id)
        .join(FixedIP, FixedIP.port_id == Port.id)
        .where(
            FixedIP.ip_address == ip_address,
            Port.device_owner.startswith(DEVICE_OWNER_COMPUTE_PREFIX),
        )
        .distinct()
    )
    return rows.all()


def _port_conditions(filters: dict[str, list[str]]) -> list[ColumnElement[bool]]:
    """WHERE clauses for the port filters (each: any of its values; empty lists ignored).

    With ``ip_address`` the addresses and the network are matched in ``fixed_ips`` (a fixed
    IP's network is its port's) on ``ix_fixed_ips_ip_address_network_id``, so the port is
    found by its primary key: a ``ports.network_id`` condition beside it made SQLite walk every
    port of the network instead.
    """
    given = {name: values for name, values in filters.items() if values}
    for name in given:
        if name not in PORT_FILTERS:
            raise Invalid(f"{name}: unknown port filter; use one of {', '.join(PORT_FILTERS)}")
    conditions: list[ColumnElement[bool]] = []
    if "ip_address" in given:
        by_ip = select(FixedIP.port_id).where(FixedIP.ip_address.in_(given.pop("ip_address")))
        if "network_id" in given:
            by_ip = by_ip.where(FixedIP.network_id.in_(given.pop("network_id")))
        conditions.append(Port.id.in_(by_ip))
    conditions += [getattr(Port, name).in_(values) for name, values in given.items()]
    return conditions


async def find_ports(session: AsyncSession, **filters: list[str]) -> Sequence[Port]:
    """Ports matching every given filter (each filter: any of its values)."""
    query = (
        select(Port)
        .options(*port_options())
        .where(*_port_conditions(filters))
        .order_by(Port.created_at, Port.id)
    )
    return (await session.scalars(query)).all()


async def find_port_views(session: AsyncSession, **filters: list[str]) -> list[dict[str, Any]]:
    """``find_ports`` as the admin API's JSON, in one query and without ORM objects.

    This is the agents' hot path (the metadata agent's port lookup, the DHCP agent's sync):
    one SELECT of ports joined to their fixed IPs costs a third of the ORM's two queries and
    object loading.
    """
    ports, ips = Port.__table__, FixedIP.__table__
    query = (
        select(ports, ips.c.subnet_id, ips.c.ip_address)
        .outerjoin(ips, ips.c.port_id == ports.c.id)
        .where(*_port_conditions(filters))
        .order_by(ports.c.created_at, ports.c.id, ips.c.seq)
    )
    return port_views_of_rows(await session.execute(query))


async def router_ids_on_network(session: AsyncSession, network_id: str) -> list[str]:
    rows = await session.scalars(
        select(Port.device_id)
        .where(
            Port.network_id == network_id,
            Port.device_owner == DEVICE_OWNER_ROUTER_INTERFACE,
        )
        .distinct()
        .order_by(Port.device_id)
    )
    return list(rows)
