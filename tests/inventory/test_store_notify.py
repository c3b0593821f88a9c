"""LISTEN/NOTIFY on PostgreSQL: a commit by one host wakes another host's change waiters at
once, not at its next 0.5 s poll; a lost LISTEN connection falls back to polling and comes
back by itself; the listener's connection runs no query (its own, never the pool's)."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time
from pathlib import Path

import asyncpg
import pytest

from cloudmeta.config import Config
from cloudmeta.inventory import Store, projects
from cloudmeta.inventory.database import create_engine
from inventory.dbfixtures import PG_ADMIN_DSN

pytestmark = pytest.mark.postgres


async def _write(store: Store) -> int:
    await store.transact(lambda tx: projects.create_project(tx, f"cmt-{secrets.token_hex(3)}"))
    return await store.revision()


def _other_host(config: Config, tmp_path: Path) -> Store:
    """A store as another host opens it: same database, its own state_path (no shared
    revision file), so only the database can tell it of our writes."""
    return Store(create_engine(config.database_url), tmp_path / "cmt-other-host-revision")


@pytest.fixture
def pg_config(db_config: Config) -> Config:
    if not db_config.database.connection:
        pytest.skip("PostgreSQL only")
    return db_config


async def _delays(writer: Store, reader: Store, count: int) -> list[float]:
    found = []
    for _ in range(count):
        since = await reader.revision()
        waiter = asyncio.create_task(reader.wait_for_change(since, 5.0))
        await asyncio.sleep(0.01)  # the waiter is parked on its event
        started = time.perf_counter()
        revision = await _write(writer)
        assert await waiter >= revision
        found.append(time.perf_counter() - started)
    return found


async def test_a_commit_wakes_the_other_hosts_waiters_at_once(
    store: Store, pg_config: Config, tmp_path: Path
) -> None:
    other = _other_host(pg_config, tmp_path)
    try:
        assert await other.listen(5.0)
        delays = await _delays(store, other, 20)
        # The 0.5 s poll alone would make the median ~250 ms.
        assert statistics.median(delays) < 0.1, delays
    finally:
        await other.close()


async def test_a_lost_listen_connection_polls_then_listens_again(
    store: Store, pg_config: Config, tmp_path: Path
) -> None:
    other = _other_host(pg_config, tmp_path)
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        assert await other.listen(5.0)
        listening = await admin.fetch(
            "SELECT pid, query FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            pg_config.database.connection.rsplit("/", 1)[1],
        )
        assert len(listening) == 1  # one connection, and LISTEN the last thing it ran
        await admin.execute("SELECT pg_terminate_backend($1)", listening[0]["pid"])
        deadline = time.monotonic() + 5
        while other.listening:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        # Meanwhile the poll still delivers, within its interval.
        since = await other.revision()
        started = time.perf_counter()
        waiter = asyncio.create_task(other.wait_for_change(since, 5.0))
        await _write(store)
        assert await waiter > since
        assert time.perf_counter() - started < 1.5
        assert await other.listen(10.0)  # reconnected by itself
        delays = await _delays(store, other, 10)
        assert statistics.median(delays) < 0.1, delays
    finally:
        await admin.close()
        await other.close()
