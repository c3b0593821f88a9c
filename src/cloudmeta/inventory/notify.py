"""PostgreSQL's LISTEN/NOTIFY for the change feed: every host learns of a commit at once.

Each write transaction sends ``NOTIFY cloudmeta_changes, '<revision>'`` before it commits
(PostgreSQL delivers it with the commit, never for a rollback). :class:`ChangeListener` keeps
one asyncpg connection of its own LISTENing on that channel and calls
``on_change(revision)`` for each notification, ``on_change(None)`` once LISTEN is in place
(whatever committed before went unheard). That connection runs nothing else, ever: it is not
from SQLAlchemy's pool, so no query can overlap the listener on one connection (asyncpg
refuses a second operation on a busy connection: "cannot switch to state ...; another
operation is in progress"). When the connection is lost (a server restart,
``pg_terminate_backend``) it reconnects with backoff; meanwhile, and always on SQLite, the
store's 0.5 s poll finds the changes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
from sqlalchemy.engine import URL

from cloudmeta.logs import get_logger

__all__ = ["CHANNEL", "ChangeListener", "notify_statement"]

CHANNEL = "cloudmeta_changes"
_log = get_logger("inventory")
_MIN_BACKOFF = 0.2
_MAX_BACKOFF = 5.0
_CONNECT_TIMEOUT = 5.0


def notify_statement() -> str:
    """The SQL a write transaction runs before COMMIT (the payload: its revision)."""
    return f"SELECT pg_notify('{CHANNEL}', :revision)"


def _dsn(url: URL) -> str:
    """asyncpg's DSN for the engine's URL (the driver part dropped)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class ChangeListener:
    """``start()`` once; ``listening`` says whether notifications arrive right now."""

    def __init__(self, url: URL, on_change: Callable[[int | None], None]) -> None:
        self._dsn = _dsn(url)
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.listening = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="inventory-listen")

    async def wait_listening(self, timeout: float) -> bool:  # noqa: ASYNC109
        """Until the LISTEN is in place (tests, start-up); False after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout)
        return self.listening

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _notified(self, _connection: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            revision: int | None = int(payload)
        except ValueError:
            revision = None
        self._on_change(revision)

    async def _run(self) -> None:
        backoff = _MIN_BACKOFF
        while True:
            try:
                await self._listen_once()
                backoff = _MIN_BACKOFF
                _log.warning("change notifications lost; polling until reconnected")
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                _log.warning(
                    "cannot LISTEN for changes; polling meanwhile", error=str(exc), retry_in=backoff
                )
            await asyncio.sleep(backoff)
            backoff = min(_MAX_BACKOFF, backoff * 2)

    async def _listen_once(self) -> None:
        """Connect, LISTEN, and return when the connection is gone."""
        lost = asyncio.Event()
        connection = await asyncpg.connect(self._dsn, timeout=_CONNECT_TIMEOUT)
        try:
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(CHANNEL, self._notified)
            self.listening = True
            self._connected.set()
            # Whatever committed before the LISTEN took effect: the waiters look again.
            self._on_change(None)
            await lost.wait()
        finally:
            self.listening = False
            self._connected.clear()
            if not connection.is_closed():
                connection.terminate()  # never a query on a connection in an unknown state
