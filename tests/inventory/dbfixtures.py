"""Database fixtures: every inventory and admin API test runs on SQLite and on PostgreSQL.

Each PostgreSQL test gets its own database ``cmt_<hex>``, dropped at the end even on failure.
PostgreSQL being down fails these tests rather than skipping them: the suite must run on it
(issue 2), and ``make test`` starts it (scripts/ensure-services.sh).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from cloudmeta.config import Config
from cloudmeta.inventory import Store

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"


async def pg_admin(dsn: str = PG_ADMIN_DSN) -> asyncpg.Connection:
    """A connection to the maintenance database; an unreachable server fails the test."""
    try:
        return await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL at {dsn} is unreachable ({exc}); the inventory and admin suites must "
            "run on it: start it with `make services` (make test does)",
            pytrace=False,
        )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def db_config(
    request: pytest.FixtureRequest, make_config: Callable[..., Config]
) -> AsyncIterator[Config]:
    """A Config whose ``[database] connection`` is a fresh, empty database."""
    if request.param == "sqlite":
        yield make_config()
        return
    name = f"cmt_{secrets.token_hex(6)}"
    admin = await pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield make_config(database={"connection": PG_URL.format(name=name)})
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def store(db_config: Config) -> AsyncIterator[Store]:
    opened = await Store.open(db_config)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database for tests that are about PostgreSQL alone (LISTEN/NOTIFY,
    several API hosts on one database); dropped at the end."""
    name = f"cmt_{secrets.token_hex(6)}"
    admin = await pg_admin()
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield PG_URL.format(name=name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
