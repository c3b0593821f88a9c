"""The agents' port lookup: the one-query JSON path equals the ORM's, and is index-driven."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from sqlalchemy import event, insert

from cloudmeta.inventory import Store, Tx, network_ops, queries
from cloudmeta.inventory import views as v
from cloudmeta.inventory.models import Port
from cloudmeta.inventory.specs import FixedIPSpec, NetworkCreate, PortCreate, SubnetCreate

T = TypeVar("T")

FILTERS: list[dict[str, list[str]]] = [
    {},
    {"ip_address": ["192.0.2.20"]},
    {"ip_address": ["192.0.2.20", "2001:db8::20"]},
    {"mac_address": ["fa:16:3e:00:00:02"]},
    {"device_id": ["cmt-dev-1"]},
    {"device_owner": ["network:dhcp"]},
    {"device_owner": ["compute:nova"], "device_id": ["cmt-dev-1", "cmt-dev-2"]},
]


async def _ports(store: Store) -> tuple[str, str]:
    """Two networks; ports with two, one and no addresses. Returns (network, other network)."""

    async def build(tx: Tx) -> tuple[str, str]:
        nets, v6 = [], []
        for name in ("cmt-a", "cmt-b"):
            net = await network_ops.create_network(tx, NetworkCreate(name=name))
            await network_ops.create_subnet(
                tx, SubnetCreate(network_id=net.id, cidr="192.0.2.0/24")
            )
            subnet = SubnetCreate(network_id=net.id, cidr="2001:db8::/64")
            v6.append((await network_ops.create_subnet(tx, subnet)).id)
            nets.append(net.id)
        both = [FixedIPSpec(ip_address="192.0.2.20"), FixedIPSpec(ip_address="2001:db8::20")]
        for net, owner, device, ips in (
            (nets[0], "compute:nova", "cmt-dev-1", both),
            (nets[1], "compute:nova", "cmt-dev-2", both),  # the same addresses elsewhere
            (nets[0], "network:dhcp", "cmt-dhcp", [FixedIPSpec(subnet_id=v6[0])]),
            (nets[0], "", "", []),
        ):
            spec = PortCreate(network_id=net, device_owner=owner, device_id=device, fixed_ips=ips)
            await network_ops.create_port(tx, spec)
        return nets[0], nets[1]

    return await store.transact(build)


async def test_port_views_equal_the_orm_views_for_every_filter(store: Store) -> None:
    network, other = await _ports(store)
    cases = [*FILTERS, *({**f, "network_id": [network]} for f in FILTERS)]
    cases.append({"ip_address": ["192.0.2.20"], "network_id": [network, other]})
    async with store.read() as session:
        for filters in cases:
            expected = [v.port_view(p) for p in await queries.find_ports(session, **filters)]
            assert await queries.find_port_views(session, **filters) == expected, filters
        one = await queries.find_port_views(
            session, ip_address=["192.0.2.20"], network_id=[network]
        )
    assert len(one) == 1 and one[0]["network_id"] == network
    assert [ip["ip_address"] for ip in one[0]["fixed_ips"]] == ["192.0.2.20", "2001:db8::20"]


@pytest.mark.parametrize("db_config", ["sqlite"], indirect=True)
async def test_sqlite_lookup_by_address_uses_the_index_not_the_networks_ports(
    store: Store,
) -> None:
    """10 000 ports on the lookup's network: the plan must not walk them (it once did)."""
    network, known = await _crowded(store)
    async with store.read() as session:
        found, plan = await _planned(
            store,
            queries.find_port_views(session, ip_address=["192.0.2.20"], network_id=[network]),
        )
    assert [p["id"] for p in found] == [known["id"]]
    assert any("ix_fixed_ips_ip_address_network_id" in step for step in plan), plan
    assert not any("ix_ports_network_id" in step or "SCAN ports" in step for step in plan), plan


async def _crowded(store: Store) -> tuple[str, dict[str, Any]]:
    """:func:`_ports` plus 10 000 ports on the first network: (that network, cmt-dev-1's port)."""
    network, _ = await _ports(store)
    async with store.read() as session:
        (known,) = await queries.find_port_views(session, device_id=["cmt-dev-1"])
    await _bulk_ports(store, network, known["project_id"], 10_000)
    return network, known


async def _bulk_ports(store: Store, network: str, project_id: str, count: int) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(Port.__table__),
            [
                {"id": f"cmt-bulk-{n}", "name": "", "network_id": network,
                 "project_id": project_id, "device_owner": "compute:bulk",
                 "mac_address": f"fa:16:3f:00:{n >> 8:02x}:{n & 0xFF:02x}", "device_id": ""}
                for n in range(count)
            ],
        )  # fmt: skip


async def _planned(store: Store, query: Awaitable[T]) -> tuple[T, list[str]]:
    """What ``query`` returned and SQLite's plan of its one statement on ``ports``."""
    statements: list[tuple[str, tuple[object, ...]]] = []

    def capture(_c: object, _cur: object, sql: str, params: object, *_: object) -> None:
        if "FROM ports" in sql:
            statements.append((sql, tuple(params)))  # type: ignore[arg-type]

    event.listen(store.engine.sync_engine, "before_cursor_execute", capture)
    try:
        result = await query
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", capture)
    ((sql, params),) = statements
    async with store.engine.connect() as conn:
        plan = [row[-1] for row in await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)]
    return result, plan


@pytest.mark.parametrize("db_config", ["sqlite"], indirect=True)
async def test_sqlite_dhcp_ports_of_a_network_do_not_walk_its_ports(store: Store) -> None:
    """Every document built asks for the DHCP ports of the instance's networks; with 10 000
    ports on the network SQLite walked all of them by ``ix_ports_network_id`` (28 ms at
    100 000: the p99 of ``meta_data.json`` at scale). Migration 0008's index answers it."""
    network, _ = await _crowded(store)
    async with store.read() as session:
        found, plan = await _planned(
            store, queries.find_ports(session, network_id=[network], device_owner=["network:dhcp"])
        )
    assert [p.device_id for p in found] == ["cmt-dhcp"]
    assert any("ix_ports_network_id_device_owner" in step for step in plan), plan
    assert not any("SCAN ports" in step for step in plan), plan
