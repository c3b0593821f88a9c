"""Listening sockets -> gated aiohttp servers: the one way cloudmeta serves HTTP.

Every listener (inline namespace sockets, a process proxy, the agent's unix socket, the
metadata and the admin API) goes through :func:`serve`, so each gets the same head gate,
keep-alive bound and quiet error pages; only its :class:`~cloudmeta.http.gate.Limits` differ
(connection caps where instances connect).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from aiohttp import web

from cloudmeta.metrics import watch_listener

from .gate import Budget, Limits, gated
from .quiet import QuietServer

__all__ = ["BACKLOG", "Handler", "Listener", "serve", "tcp_sockets", "unix_socket"]

BACKLOG = 1024
SHUTDOWN_TIMEOUT = 1.0  # seconds a stop waits for requests in flight

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(slots=True)
class Listener:
    """The servers of one listener (all of its sockets share one :class:`Budget`)."""

    http: QuietServer
    budget: Budget
    servers: list[asyncio.AbstractServer] = field(default_factory=list)
    owns_http: bool = True
    unwatch: Callable[[], None] | None = None  # ends its export to the metrics

    @property
    def addresses(self) -> list[object]:
        """The bound addresses (``getsockname()`` of every socket)."""
        servers = [cast(asyncio.Server, server) for server in self.servers]  # uvloop's too
        return [sock.getsockname() for server in servers for sock in server.sockets]

    async def close(self, grace: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop accepting. With its own server, also end its connections (requests in flight
        get ``grace`` seconds); a shared server's connections stay with their owner."""
        for server in self.servers:
            server.close()
        if self.unwatch is not None:
            self.unwatch()
            self.unwatch = None
        if not self.owns_http:
            return
        await self.http.shutdown(grace)
        for server in self.servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), grace)


async def serve(
    sockets: Iterable[socket.socket],
    handler: Handler | QuietServer,
    limits: Limits,
    *,
    shared: bool = False,
    name: str = "",
) -> Listener:
    """Serve ``handler`` (or a :class:`QuietServer`) on ``sockets`` behind one gate.

    The sockets are listening already (TCP or unix); on failure they are all closed. A given
    :class:`QuietServer` brings its own keep-alive timeout (build it from the same config); a
    ``shared`` one (one for many listeners) is not shut down by :meth:`Listener.close`.
    A ``name`` exports the listener's connection counts to the metrics (``listener=name``).
    """
    socks = list(sockets)
    if isinstance(handler, QuietServer):
        listener = Listener(handler, Budget(limits), owns_http=not shared)
    else:
        http = QuietServer(handler, keepalive_timeout=limits.keepalive_timeout)
        listener = Listener(http, Budget(limits))
    if name:
        listener.unwatch = watch_listener(name, listener.budget)
    factory = gated(listener.http, listener.budget)
    loop = asyncio.get_running_loop()
    try:
        for sock in socks:
            listener.servers.append(await loop.create_server(factory, sock=sock, backlog=BACKLOG))
    except BaseException:
        if listener.unwatch is not None:
            listener.unwatch()
        for server in listener.servers:
            server.close()
        for sock in socks[len(listener.servers) :]:
            sock.close()
        raise
    return listener


def tcp_sockets(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names (as aiohttp's TCPSite binds), with
    SO_REUSEPORT when several processes serve the port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    made: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            made.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Port 0: every address on the ephemeral port the first one got, as one listener.
            sock.bind((address[0], port, *address[2:]))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except BaseException:
        for sock in made:
            sock.close()
        raise
    return made


def unix_socket(path: Path, mode: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening unix socket at ``path`` (which must not exist) with permissions ``mode``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with _closed_on_error(sock):
        sock.bind(str(path))
        os.chmod(path, mode)
        sock.listen(backlog)
        sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _closed_on_error(sock: socket.socket) -> Iterator[None]:
    try:
        yield
    except BaseException:
        sock.close()
        raise
