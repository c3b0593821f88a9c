"""The store: sessions, one transaction per change, the revision counter and its change feed.

Every write transaction first bumps the single ``store_state`` row. That row lock serialises
writers on PostgreSQL (and SQLite's write lock does the same), so revisions commit in order and
the agents never see revision N+1 before N. The changes written in the same transaction name
what changed and what each touches (:mod:`.changes`); :meth:`Store.wait_for_change` wakes at
once on writes of this process, on PostgreSQL also on every other host's (LISTEN/NOTIFY,
:mod:`.notify`), and polls the database every 0.5 s besides (the SQLite path, and the fallback
while notifications are down).

:meth:`Store.change_token` is the change signal for hot paths: a number read from an 8-byte
shared file (``store_revision`` in ``state_path``) that every committing process on this host
overwrites with its revision right after the commit, so a reader in any process of the host
learns of a write without a query (the metadata API's cache checks it on every request).
"""

from __future__ import annotations

import asyncio
import mmap
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import TypeVar

from sqlalchemy import delete, event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cloudmeta.config import Config
from cloudmeta.inventory import queries
from cloudmeta.inventory.changes import ChangeRecord, Touches, merge_touches
from cloudmeta.inventory.database import (
    BEGIN_OPTION,
    connection_lost,
    create_engine,
    database_away,
    upgrade,
)
from cloudmeta.inventory.errors import Conflict, InventoryUnavailable
from cloudmeta.inventory.models import Change, Port, Server, StoreState
from cloudmeta.inventory.notify import ChangeListener, notify_statement
from cloudmeta.logs import get_logger

__all__ = ["REVISION_FILE", "ChangeRecord", "Store", "Tx"]

T = TypeVar("T")
# How long closing the store waits for connections still in use (a cancelled query).
CLOSE_WAIT = 5.0
_log = get_logger("inventory")
# How many revisions of change history to keep; older `since` values answer "resync".
HISTORY_REVISIONS = 10000
POLL_INTERVAL = 0.5
_WRITE_RETRIES = 5
# In state_path: the last committed revision as 8 little-endian bytes (see change_token).
REVISION_FILE = "store_revision"
_SLOT = struct.Struct("<Q")


class Tx:
    """One write transaction: its session, its revision and the changes it records."""

    def __init__(self, session: AsyncSession, revision: int) -> None:
        self.session = session
        self.revision = revision
        self.changes: list[ChangeRecord] = []

    def record(self, kind: str, object_id: str, op: str, touches: Touches) -> None:
        """Note a change and what it touches (merged into an equal change noted before)."""
        change = ChangeRecord(self.revision, kind, object_id, op, touches)
        for index, noted in enumerate(self.changes):
            if noted == change:
                merged = merge_touches(noted.touches or {}, touches)
                self.changes[index] = ChangeRecord(self.revision, kind, object_id, op, merged)
                return
        self.changes.append(change)


class Store:
    """The inventory database of one process; open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, engine: AsyncEngine, revision_file: Path | None = None) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._sqlite = engine.dialect.name == "sqlite"
        # SQLite allows one writer; queueing them here beats spinning on busy_timeout.
        self._write_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        # The highest revision known committed without a query (ours, or another host's NOTIFY).
        self._heard = 0
        self._commits = 0
        self._shared = _map_revision_file(revision_file) if revision_file else None
        self._listener = None if self._sqlite else ChangeListener(engine.url, self._heard_commit)

    @classmethod
    async def open(cls, config: Config, *, migrate: bool = True) -> Store:
        """Connect to ``config.database_url`` and bring the schema to head."""
        store = cls(create_engine(config.database_url), config.state_path / REVISION_FILE)
        if migrate:
            await upgrade(store.engine)
        return store

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        await self._returned(CLOSE_WAIT)
        await self.engine.dispose()
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    async def _returned(self, timeout: float) -> None:  # noqa: ASYNC109
        """Until every pooled connection is back (at most ``timeout`` s). A request cancelled
        at shutdown leaves its query running in the driver's thread (aiosqlite) until it
        ends, and its session gives the connection back only then: disposing of the engine
        before, and closing the loop, made that thread answer a closed loop
        (``RuntimeError: Event loop is closed`` in a thread; tests/inventory/
        test_store_close.py)."""
        pool = self.engine.pool
        if pool.checkedout() == 0:  # type: ignore[attr-defined]
            return
        loop = asyncio.get_running_loop()
        checked_in = asyncio.Event()

        def on_checkin(*_: object) -> None:
            loop.call_soon_threadsafe(checked_in.set)

        event.listen(pool, "checkin", on_checkin)
        try:
            async with asyncio.timeout(timeout):
                while True:  # cleared before the count is read: no check-in is missed
                    checked_in.clear()
                    if pool.checkedout() == 0:  # type: ignore[attr-defined]
                        break
                    await checked_in.wait()
        except TimeoutError:
            _log.warning("closing with database connections still in use", timeout=timeout)
        finally:
            event.remove(pool, "checkin", on_checkin)

    def change_token(self) -> int:
        """A number that changes as soon as a write commits here or in any process sharing
        this host's ``state_path``: compare it with ``!=`` (no query, no syscall).

        Writes committed by processes of other hosts (a shared PostgreSQL) do not show here;
        :meth:`wait_for_change` polls the database for those.
        """
        if self._shared is not None:
            return int(_SLOT.unpack_from(self._shared)[0])
        return self._commits

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A session for reading (a plain, non-locking transaction).

        The database away (see :func:`.database_away`) raises :class:`InventoryUnavailable`,
        here as in every session of the store.
        """
        with _unavailable_when_away():
            async with self._sessions() as session, session.begin():
                yield session

    async def _reading(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """``work`` in a read session, and once more on another connection when the first
        died under it (:func:`.connection_lost`: a backend terminated while pooled, which the
        pre-ping cannot always see). A read is safe to repeat; a write never is (did it
        commit?), so writes answer :class:`InventoryUnavailable` instead."""
        try:
            async with self.read() as session:
                return await work(session)
        except InventoryUnavailable as exc:
            if exc.__cause__ is None or not connection_lost(exc.__cause__):
                raise
            _log.info("database connection lost under a read; reading again", error=exc.cause)
        async with self.read() as session:
            return await work(session)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """One write transaction; commits with a new revision if it recorded changes."""
        with _unavailable_when_away():
            async with self._write() as tx:
                yield tx

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[Tx]:
        async with self._writer(), self._sessions() as session:
            # Autobegins the transaction; on SQLite as BEGIN IMMEDIATE (the write lock).
            await session.connection(execution_options={BEGIN_OPTION: "IMMEDIATE"})
            revision = await self._bump(session)
            tx = Tx(session, revision)
            yield tx  # an exception here leaves the block and the session rolls back
            if not tx.changes:
                await session.rollback()
                return
            session.add_all(
                Change(revision=c.revision, kind=c.kind, object_id=c.id, op=c.op, touches=c.touches)
                for c in tx.changes
            )
            if revision % 100 == 0:
                await self._prune(session, revision)
            if not self._sqlite:  # delivered with the commit, to every listening host
                await session.execute(text(notify_statement()), {"revision": str(revision)})
            await session.commit()
        self._notify(revision)

    @asynccontextmanager
    async def write_quiet(self) -> AsyncIterator[AsyncSession]:
        """A write transaction without a revision or change records, for state no feed
        follower reads (agents' heartbeats): it commits and wakes nobody."""
        with _unavailable_when_away():
            async with self._writer(), self._sessions() as session:
                await session.connection(execution_options={BEGIN_OPTION: "IMMEDIATE"})
                yield session
                await session.commit()

    async def transact(self, work: Callable[[Tx], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction, retrying when a unique constraint raced."""
        for attempt in range(_WRITE_RETRIES):
            try:
                async with self.write() as tx:
                    return await work(tx)
            except IntegrityError as exc:
                _log.info("write conflict, retrying", attempt=attempt, error=str(exc.orig))
        raise Conflict("the request kept conflicting with concurrent changes; retry it")

    @asynccontextmanager
    async def _writer(self) -> AsyncIterator[None]:
        if self._sqlite:
            async with self._write_lock:
                yield
        else:
            yield

    @staticmethod
    async def _bump(session: AsyncSession) -> int:
        result = await session.execute(
            update(StoreState)
            .where(StoreState.id == 1)
            .values(revision=StoreState.revision + 1)
            .returning(StoreState.revision)
        )
        return int(result.scalar_one())

    @staticmethod
    async def _prune(session: AsyncSession, revision: int) -> None:
        horizon = revision - HISTORY_REVISIONS
        if horizon > 0:
            await session.execute(delete(Change).where(Change.revision <= horizon))
            await session.execute(
                update(StoreState).where(StoreState.id == 1).values(pruned_through=horizon)
            )

    def _notify(self, revision: int) -> None:
        self._commits += 1
        if self._shared is not None:
            # Each revision is committed once, so the value differs from what any reader
            # saw before this commit; racing writers may land out of order, which only costs
            # a reader one needless (empty) sync.
            _SLOT.pack_into(self._shared, 0, revision)
        self._heard_commit(revision)

    def _heard_commit(self, revision: int | None) -> None:
        """Wake every change waiter: ``revision`` committed (None: something may have)."""
        if revision is not None:
            self._heard = max(self._heard, revision)
        self._changed.set()
        self._changed = asyncio.Event()

    async def listen(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109
        """Start following other hosts' commits (PostgreSQL); whether LISTEN is in place
        within ``timeout``. :meth:`wait_for_change` starts it by itself."""
        if self._listener is None:
            return False
        self._listener.start()
        return await self._listener.wait_listening(timeout)

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.listening

    # -- the change feed -------------------------------------------------------------------

    async def revision(self) -> int:
        async def work(session: AsyncSession) -> int:
            return int(await session.scalar(select(StoreState.revision)) or 0)

        return await self._reading(work)

    async def changes_since(self, since: int) -> tuple[int, list[ChangeRecord] | None]:
        """The current revision and the changes after ``since``; None when history is lost."""

        async def work(session: AsyncSession) -> tuple[int, list[ChangeRecord] | None]:
            state = (await session.execute(select(StoreState))).scalar_one()
            if since < state.pruned_through or since > state.revision:
                return state.revision, None
            rows = await session.scalars(
                select(Change)
                .where(Change.revision > since, Change.revision <= state.revision)
                .order_by(Change.revision, Change.seq)
            )
            return state.revision, [
                ChangeRecord(r.revision, r.kind, r.object_id, r.op, r.touches) for r in rows
            ]

        return await self._reading(work)

    async def wait_for_change(self, since: int, timeout: float) -> int:  # noqa: ASYNC109
        """Wait until the revision passes ``since`` or ``timeout`` passes; return the revision."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self._listener is not None:
            self._listener.start()
        woken = False
        while True:
            event = self._changed
            if woken and self._heard > since:
                return self._heard  # a notification said which revision: no query
            current = await self.revision()
            remaining = deadline - time.monotonic()
            if current != since or remaining <= 0:
                return current
            with suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(POLL_INTERVAL, remaining))
            woken = event.is_set()

    # -- reads the metadata API needs ---------------------------------------------------------

    async def load_server(self, server_id: str) -> queries.ServerBundle | None:
        """A server with its project, key pair, ports, fixed IPs, subnets and networks."""
        return await self._reading(lambda s: queries.load_server_bundle(s, server_id))

    async def find_servers_by_ip(self, ip_address: str) -> Sequence[Server]:
        """Servers owning a port with this fixed IP (any network): the source-ip identity."""
        return await self._reading(lambda s: queries.servers_by_ip(s, ip_address))

    async def find_ports(self, **filters: list[str]) -> Sequence[Port]:
        """Ports by network_id, ip_address, mac_address, device_id, device_owner (any of each)."""
        return await self._reading(lambda s: queries.find_ports(s, **filters))

    async def set_password_once(self, server_id: str, value: str) -> bool:
        """Store the instance's password unless one is set (one atomic UPDATE); False if set."""
        async with self.write() as tx:
            result = await tx.session.execute(
                update(Server)
                .where(Server.id == server_id, Server.password.is_(None))
                .values(password=value)
            )
            if result.rowcount:  # type: ignore[attr-defined]
                tx.record("server", server_id, "update", {})
                return True
            return False

    async def clear_password(self, server_id: str) -> bool:
        """Empty the password slot so the instance may post a new one; False if unknown."""
        async with self.write() as tx:
            found = await tx.session.scalar(select(Server.id).where(Server.id == server_id))
            if not found:
                return False
            await tx.session.execute(
                update(Server).where(Server.id == server_id).values(password=None)
            )
            tx.record("server", server_id, "update", {})
            return True


@contextmanager
def _unavailable_when_away() -> Iterator[None]:
    """The database away (:func:`.database_away`) as :class:`InventoryUnavailable`."""
    try:
        yield
    except InventoryUnavailable:
        raise
    except Exception as exc:
        if not database_away(exc):
            raise
        raise InventoryUnavailable("the inventory database is unavailable; retry shortly") from exc


def _map_revision_file(path: Path) -> mmap.mmap | None:
    """Map the shared revision slot (created if missing); None (local signal only) on error."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if os.fstat(fd).st_size < _SLOT.size:
                os.ftruncate(fd, _SLOT.size)  # racing creators both extend it to zeros
            return mmap.mmap(fd, _SLOT.size)
        finally:
            os.close(fd)
    except OSError as exc:
        _log.warning(
            "no shared change signal: other processes' writes are seen by polling only",
            path=str(path),
            error=str(exc),
        )
        return None
