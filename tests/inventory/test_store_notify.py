"""LISTEN/NOTIFY on PostgreSQL: a commit by one host wakes another host's change waiters at
once, not at its next 0.5 s poll; a lost LISTEN connection falls back to polling and comes
back by itself; the listener's connection runs no query (its own, never the pool's).

That the notification wakes a waiter is shown without a clock: the store's poll is put off
for an hour, so a parked waiter can only be woken by the NOTIFY (else the test's liveness
bound fails it). How fast it wakes (the median delay, ~ms; the poll alone: ~250 ms) is a
figure for ``make soak``, asserted there only: a busy CI machine's latency is noise."""

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
from cloudmeta.inventory import store as store_module
from cloudmeta.inventory.database import create_engine
from inventory.dbfixtures import PG_ADMIN_DSN
from support.report import SOAK, record

pytestmark = pytest.mark.postgres

LIVENESS = 30.0  # seconds: far above any wake-up; only a waiter nothing wakes reaches it
NO_POLL = 3600.0  # the store's poll interval while a test shows that NOTIFY alone wakes


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


async def _delays(
    writer: Store, reader: Store, count: int, monkeypatch: pytest.MonkeyPatch
) -> list[float]:
    """Each of ``count`` writes wakes a waiter of ``reader`` with the store's poll put off:
    by the NOTIFY alone. The delays from each write's commit to its waiter's return."""
    monkeypatch.setattr(store_module, "POLL_INTERVAL", NO_POLL)
    found = []
    for _ in range(count):
        since = await reader.revision()
        waiter = asyncio.create_task(reader.wait_for_change(since, NO_POLL))
        await asyncio.sleep(0.01)  # parked by then (one still reading sees the write: fine)
        started = time.perf_counter()
        revision = await _write(writer)
        assert await asyncio.wait_for(waiter, LIVENESS) >= revision
        found.append(time.perf_counter() - started)
    return found


def _judge(name: str, delays: list[float]) -> None:
    median = statistics.median(delays)
    record("timing", name, median_ms=median * 1000, max_ms=max(delays) * 1000)
    if SOAK:  # the 0.5 s poll alone would make the median ~250 ms
        assert median < 0.1, delays


async def test_a_commit_wakes_the_other_hosts_waiters_at_once(
    store: Store, pg_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = _other_host(pg_config, tmp_path)
    try:
        assert await other.listen(5.0)
        _judge("notify-wake", await _delays(store, other, 20, monkeypatch))
    finally:
        await other.close()


async def test_a_lost_listen_connection_polls_then_listens_again(
    store: Store, pg_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
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
        # Meanwhile a waiter still gets the write (its poll), well before its own timeout.
        since = await other.revision()
        waiter = asyncio.create_task(other.wait_for_change(since, 2 * LIVENESS))
        revision = await _write(store)
        assert await asyncio.wait_for(waiter, LIVENESS) >= revision
        assert await other.listen(10.0)  # reconnected by itself
        _judge("notify-wake-after-reconnect", await _delays(store, other, 10, monkeypatch))
    finally:
        await admin.close()
        await other.close()
