"""Engines and migrations: one URL form for operators, the async driver picked here.

``sqlite:///path`` becomes ``sqlite+aiosqlite`` with WAL and a busy timeout, and write
transactions take SQLite's write lock at BEGIN (``BEGIN IMMEDIATE``) so two writers never
deadlock upgrading a read lock. ``postgresql://`` becomes ``postgresql+asyncpg``. Migrations are
Alembic's, shipped in this package and run in-process, so a first start needs no user step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from cloudmeta.inventory.errors import InventoryError

__all__ = [
    "BEGIN_OPTION",
    "async_url",
    "connection_lost",
    "create_engine",
    "database_away",
    "is_sqlite",
    "upgrade",
]

BEGIN_OPTION = "cloudmeta_begin"
_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 0x636D6D67  # pg advisory lock key: "cmmg"
# The driver's errors that say the server is away, not that the statement was wrong: class 08
# (connection exceptions, "connection was closed in the middle of operation" among them),
# class 57 (admin shutdown, crash shutdown, cannot connect now), class 53 (too many connections),
# and a database not there to connect to (dropped, being restored).
_SERVER_AWAY = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InvalidCatalogNameError,
)


def async_url(url: str) -> str:
    """Map the operator's URL to the async driver cloudmeta uses for it."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InventoryError(f"[database] connection {url!r} is not a database URL") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    else:
        raise InventoryError(
            f"[database] connection: backend {backend!r} unsupported; use sqlite:// or postgresql://"
        )
    return parsed.render_as_string(hide_password=False)


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def connection_lost(exc: BaseException) -> bool:
    """Did the connection in hand die under ``exc`` (SQLAlchemy has thrown it away)?

    A PostgreSQL backend terminated while its connection sat in the pool (a server restart,
    ``pg_terminate_backend``) sends its FATAL message before it closes the socket. asyncpg,
    reading that message while idle, enters its error-consuming state (2) but still reports the
    connection open until it reads the end of the socket, so the pool's pre-ping can pass and
    the next statement fail with "cannot switch to state 12; another operation (2) is in
    progress". asyncpg then aborts the connection and SQLAlchemy marks the error
    ``connection_invalidated``: the connection is gone, and the work may be done again on
    another.
    """
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def database_away(exc: BaseException) -> bool:
    """Is ``exc`` the database being away (a connection lost, refused or not to be had from
    the pool), rather than the statement's fault?"""
    if connection_lost(exc) or isinstance(exc, PoolTimeout):
        return True
    found: BaseException | None = exc
    if isinstance(exc, DBAPIError):  # the driver's error is the cause of the adapter's
        found = exc.orig.__cause__ or exc.orig if exc.orig is not None else None
    # OSError (TimeoutError among them): the driver's connect, refused or unanswered.
    return isinstance(found, (*_SERVER_AWAY, OSError))


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``; for SQLite the file's directory is created if missing.

    PostgreSQL connections are pinged when taken from the pool: after a server restart (or
    ``pg_terminate_backend``) every pooled connection is dead, and without the ping each one
    failed a request, and a stuck one held a request past the agents' timeout.
    """
    engine = create_async_engine(
        async_url(url), pool_pre_ping=make_url(url).get_backend_name() == "postgresql"
    )
    if is_sqlite(engine):
        database = engine.url.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        _configure_sqlite(engine)
    return engine


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: ConnectionPoolEntry) -> None:
        # Take over transaction control from the driver so BEGIN is ours to issue.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _alembic_config(connection: Connection) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade_sync(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # Several processes may start at once; one migrates, the others wait and find it done.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    command.upgrade(_alembic_config(connection), revision)


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate the database to ``revision`` in one transaction (holding the write lock)."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**{BEGIN_OPTION: "IMMEDIATE"})
        async with conn.begin():
            await conn.run_sync(_upgrade_sync, revision)
