"""The store on SQLite and PostgreSQL: migrations, revisions, the change feed, atomic writes."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import inspect, text, update

from cloudmeta.config import Config
from cloudmeta.inventory import Store, Tx, compute_ops, network_ops
from cloudmeta.inventory.database import create_engine, upgrade
from cloudmeta.inventory.models import Base, StoreState
from cloudmeta.inventory.specs import NetworkCreate, ServerCreate, SubnetCreate
from support.report import SOAK, record

# A waiter's own timeout: answering before it means the change (not the clock) woke it.
WAIT_TIMEOUT = 10.0


async def test_migrations_from_empty_to_head_create_every_table(db_config: Config) -> None:
    engine = create_engine(db_config.database_url)
    try:
        await upgrade(engine)
        await upgrade(engine)  # idempotent
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        assert set(Base.metadata.tables) <= tables
        assert version == "0008"
    finally:
        await engine.dispose()


async def _build(store: Store, servers: int = 1) -> tuple[str, list[str]]:
    async def build(tx: Tx) -> tuple[str, list[str]]:
        network = await network_ops.create_network(tx, NetworkCreate(name="cmt-net"))
        await network_ops.create_subnet(
            tx, SubnetCreate(network_id=network.id, cidr="192.0.2.0/24")
        )
        ids = []
        for index in range(servers):
            spec = ServerCreate.model_validate(
                {"name": f"cmt-vm{index}", "networks": [{"network_id": network.id}]}
            )
            ids.append((await compute_ops.create_server(tx, spec)).id)
        return network.id, ids

    return await store.transact(build)


async def test_revision_and_changes_follow_every_write(store: Store) -> None:
    assert await store.revision() == 0
    assert await store.changes_since(0) == (0, [])
    _network_id, (_server_id,) = await _build(store)
    revision, changes = await store.changes_since(0)
    assert revision == 1 and changes is not None
    kinds = {(c.kind, c.op) for c in changes}
    assert {("network", "create"), ("subnet", "create"), ("server", "create")} <= kinds
    assert ("port", "create") in kinds
    assert await store.changes_since(revision) == (revision, [])
    # A revision from the future (a recreated database) asks the caller to resync.
    assert (await store.changes_since(revision + 5))[1] is None


async def test_history_older_than_kept_answers_resync(store: Store) -> None:
    await _build(store)
    async with store.write() as tx:
        await tx.session.execute(update(StoreState).values(pruned_through=1))
        tx.record("project", "cmt-fake", "update", {})
    assert (await store.changes_since(0))[1] is None
    assert (await store.changes_since(1))[1] is not None


async def test_server_bundle_and_lookup_by_ip(store: Store) -> None:
    network_id, (server_id,) = await _build(store)
    bundle = await store.load_server(server_id)
    assert bundle is not None
    assert bundle.server.name == "cmt-vm0" and bundle.project.name == "default"
    (port,) = bundle.ports
    assert port.network_id == network_id
    assert port.fixed_ips[0].ip_address == "192.0.2.2"
    assert port.fixed_ips[0].subnet.cidr == "192.0.2.0/24"
    assert bundle.networks[network_id].mtu == 1500
    found = await store.find_servers_by_ip("192.0.2.2")
    assert [s.id for s in found] == [server_id]
    assert await store.find_servers_by_ip("192.0.2.99") == []
    assert await store.load_server("cmt-missing") is None


async def test_password_is_set_once_even_under_concurrency(store: Store) -> None:
    _, (server_id,) = await _build(store)
    results = await asyncio.gather(
        *(store.set_password_once(server_id, f"cmt-pw-{i}") for i in range(10))
    )
    assert results.count(True) == 1
    assert await store.clear_password(server_id)
    assert await store.set_password_once(server_id, "cmt-again")
    assert not await store.clear_password("cmt-missing")


@pytest.mark.soak
async def test_wait_for_change_wakes_at_once_on_a_local_write(store: Store) -> None:
    since = await store.revision()
    begun = time.monotonic()
    waiter = asyncio.create_task(store.wait_for_change(since, WAIT_TIMEOUT))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await _build(store)
    revision = await waiter
    elapsed = time.monotonic() - started
    record("timing", "wait-for-change-local", woke_ms=elapsed * 1000)
    assert revision == since + 1
    assert time.monotonic() - begun < WAIT_TIMEOUT  # woken by the write, not by its timeout
    if SOAK:
        assert elapsed < 1.0


@pytest.mark.soak
async def test_wait_for_change_sees_writes_of_another_process(
    store: Store, db_config: Config
) -> None:
    other = await Store.open(db_config)  # stands for a second process: no shared event
    try:
        since = await store.revision()
        begun = time.monotonic()
        waiter = asyncio.create_task(store.wait_for_change(since, WAIT_TIMEOUT))
        await _build(other)
        started = time.monotonic()
        assert await waiter == since + 1
        elapsed = time.monotonic() - started
        record("timing", "wait-for-change-other-process", woke_ms=elapsed * 1000)
        assert time.monotonic() - begun < WAIT_TIMEOUT  # its poll saw the write, not its timeout
        if SOAK:
            assert elapsed < 2.0
        assert await store.wait_for_change(since + 1, 0.1) == since + 1  # times out
    finally:
        await other.close()
