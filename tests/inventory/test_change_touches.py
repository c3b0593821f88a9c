"""Change records name what they touch (migration 0003), on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import update

from cloudmeta.inventory import ChangeRecord, Store, Tx, compute_ops, network_ops
from cloudmeta.inventory.models import DEVICE_OWNER_DHCP, Change
from cloudmeta.inventory.specs import (
    KeypairCreate,
    NetworkCreate,
    PortCreate,
    RouterCreate,
    ServerCreate,
    SubnetCreate,
)


async def _changes(store: Store, since: int) -> list[ChangeRecord]:
    _, found = await store.changes_since(since)
    assert found is not None
    return found


def _one(changes: list[ChangeRecord], kind: str, op: str) -> ChangeRecord:
    found = [c for c in changes if c.kind == kind and c.op == op]
    assert len(found) == 1, found
    return found[0]


async def test_ports_servers_subnets_keypairs_and_routers_name_what_they_touch(
    store: Store,
) -> None:
    async def build(tx: Tx) -> tuple[str, str, str]:
        network = await network_ops.create_network(tx, NetworkCreate(name="cmt-net"))
        subnet = await network_ops.create_subnet(
            tx, SubnetCreate(network_id=network.id, cidr="192.0.2.0/24")
        )
        await compute_ops.create_keypair(tx, KeypairCreate(name="cmt-key"))
        spec = ServerCreate.model_validate(
            {
                "name": "cmt-vm",
                "key_name": "cmt-key",
                "networks": [{"network_id": network.id, "fixed_ip": "192.0.2.20"}],
            }
        )
        server = await compute_ops.create_server(tx, spec)
        return network.id, subnet.id, server.id

    network_id, subnet_id, server_id = await store.transact(build)
    changes = await _changes(store, 0)
    port = _one(changes, "port", "create")
    assert port.touches is not None
    assert port.touches["network_ids"] == [network_id]
    assert port.touches["subnet_ids"] == [subnet_id]
    assert port.touches["device_ids"] == [server_id]
    assert port.touches["ip_addresses"] == ["192.0.2.20"]
    assert port.touches["device_owners"] == ["compute:nova"]
    assert len(port.touches["mac_addresses"]) == 1
    server = _one(changes, "server", "create")
    assert server.touches is not None
    assert server.touches["port_ids"] == [port.id]
    assert server.touches["network_ids"] == [network_id]
    assert server.touches["ip_addresses"] == ["192.0.2.20"]
    assert _one(changes, "subnet", "create").touches == {"network_ids": [network_id]}
    keypair = _one(changes, "keypair", "create")
    assert keypair.touches is not None and keypair.touches["names"] == ["cmt-key"]
    assert keypair.touches["project_ids"] == server.touches["project_ids"]
    # The admin API's JSON keeps the old keys and adds "touches".
    assert port.as_dict() == {
        "revision": 1,
        "kind": "port",
        "id": port.id,
        "op": "create",
        "touches": port.touches,
    }

    async def dhcp_and_router(tx: Tx) -> str:
        await network_ops.create_port(
            tx,
            PortCreate(network_id=network_id, device_owner=DEVICE_OWNER_DHCP, device_id="dhcp-x"),
        )
        router = await network_ops.create_router(tx, RouterCreate(name="cmt-router"))
        await network_ops.add_router_interface(tx, router.id, subnet_id)
        return router.id

    router_id = await store.transact(dhcp_and_router)
    changes = await _changes(store, 1)
    router = _one(changes, "router", "update")
    assert router.touches is not None and router.touches["network_ids"] == [network_id]
    interface = [
        c
        for c in changes
        if c.kind == "port" and c.touches and c.touches.get("device_ids") == [router_id]
    ]
    assert len(interface) == 1 and interface[0].touches
    assert interface[0].touches["ip_addresses"] == ["192.0.2.1"]

    revision = await store.revision()
    await store.transact(lambda tx: compute_ops.delete_server(tx, server_id))
    changes = await _changes(store, revision)
    deleted = _one(changes, "port", "delete")
    assert deleted.id == port.id and deleted.touches == port.touches
    assert _one(changes, "server", "delete").touches == server.touches


async def test_deleting_a_subnet_names_the_dhcp_port_addresses_it_takes_away(store: Store) -> None:
    async def build(tx: Tx) -> tuple[str, str]:
        network = await network_ops.create_network(tx, NetworkCreate(name="cmt-net"))
        subnet = await network_ops.create_subnet(
            tx, SubnetCreate(network_id=network.id, cidr="198.51.100.0/24")
        )
        dhcp = await network_ops.create_port(
            tx, PortCreate(network_id=network.id, device_owner=DEVICE_OWNER_DHCP)
        )
        return subnet.id, dhcp.id

    subnet_id, dhcp_id = await store.transact(build)
    revision = await store.revision()
    await store.transact(lambda tx: network_ops.delete_subnet(tx, subnet_id))
    changes = await _changes(store, revision)
    update_ = _one(changes, "port", "update")
    assert update_.id == dhcp_id and update_.touches is not None
    assert update_.touches["ip_addresses"] == ["198.51.100.2"]
    assert update_.touches["subnet_ids"] == [subnet_id]


async def test_a_record_from_before_0003_reads_as_touching_anything(store: Store) -> None:
    await store.transact(lambda tx: network_ops.create_network(tx, NetworkCreate(name="cmt-n")))
    async with store.write() as tx:
        await tx.session.execute(update(Change).values(touches=None))
        tx.record("project", "cmt-unused", "update", {})  # something to commit
    changes = await _changes(store, 0)
    old = _one(changes, "network", "create")
    assert old.touches is None
    assert _one(changes, "project", "update").touches == {}
    assert "touches" not in old.as_dict()
