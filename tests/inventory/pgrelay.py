"""A TCP relay in front of PostgreSQL that can hold a terminated backend's close.

``pg_terminate_backend`` makes the backend send ``FATAL: terminating connection due to
administrator command`` and then exit; the client reads the FATAL message first and the end of
the socket only later (on a loaded machine, much later). In that window asyncpg has put the
idle connection into its error-consuming state (protocol state 2: an ErrorResponse while idle)
yet still reports it open, and the next operation on it fails with "cannot switch to state N;
another operation (2) is in progress". The relay forwards every byte at once, both ways; for a
connection marked with :meth:`PgRelay.hold`, it keeps the server's end from reaching the
client until the client goes away or :meth:`PgRelay.release`, so a test holds that window
open instead of hoping to hit it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import struct
import termios
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["Link", "PgRelay", "relayed"]

_CHUNK = 65536


def _queued(sock: Any, request: int) -> int:
    raw = fcntl.ioctl(sock.fileno(), request, b"\0\0\0\0")
    return int(struct.unpack("i", raw)[0])


class Link:
    """One relayed connection, known by the client's local port."""

    def __init__(self, client_port: int, to_client: Any) -> None:
        self.client_port = client_port
        self.held = False
        self.server_ended = asyncio.Event()  # everything the server sent is forwarded
        self.released = asyncio.Event()
        self._to_client = to_client  # our socket towards the client

    async def read_by(self, client_socket: Any) -> None:
        """Until the client has read every byte the server sent before it ended: nothing
        left unacknowledged on our side (TIOCOUTQ) nor unread on the client's (FIONREAD)."""
        await self.server_ended.wait()
        # The kernel's queue counters have no event to wait on; they drain within a tick.
        while self._unread(client_socket):  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    def _unread(self, client_socket: Any) -> int:
        return _queued(self._to_client, termios.TIOCOUTQ) + _queued(client_socket, termios.FIONREAD)


class PgRelay:
    """``127.0.0.1:<port>`` relayed to ``upstream``."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server: asyncio.Server | None = None
        self._links: dict[int, Link] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def hold(self, client_port: int) -> Link:
        """From now on, keep this connection's server-side close from its client."""
        link = self._links[client_port]
        link.held = True
        return link

    def release(self) -> None:
        for link in self._links.values():
            link.released.set()

    async def close(self) -> None:
        self.release()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        link = Link(writer.get_extra_info("peername")[1], writer.get_extra_info("socket"))
        self._links[link.client_port] = link
        for task in (
            asyncio.create_task(self._to_server(link, reader, up_writer)),
            asyncio.create_task(self._to_client(link, up_reader, writer)),
        ):
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(_CHUNK):
                sink.write(data)
                await sink.drain()

    async def _to_server(
        self, link: Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            await self._pump(source, sink)
        finally:
            link.released.set()  # the client is gone: nothing to hold the close from
            sink.close()

    async def _to_client(
        self, link: Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter
    ) -> None:
        try:
            await self._pump(source, sink)
            link.server_ended.set()
            if link.held:
                await link.released.wait()
        finally:
            sink.close()


@contextlib.asynccontextmanager
async def relayed(upstream: tuple[str, int] = ("127.0.0.1", 5432)) -> AsyncIterator[PgRelay]:
    relay = PgRelay(upstream)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()
