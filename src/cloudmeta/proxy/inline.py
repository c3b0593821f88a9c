"""``inline`` mode: the agent's own listening sockets inside each served namespace.

No process and no unix-socket hop per network: a socket is created inside the namespace by
:func:`cloudmeta.linux.open_socket_in_namespace` (a helper thread does the ``setns``) and served
by the caller's event loop through ONE shared aiohttp low-level server. Which network or router
a connection belongs to is read from the accepted socket itself: its network-namespace cookie
(``SO_NETNS_COOKIE``, Linux >= 5.14) is the same as its listener's, so the record per namespace
is just ``cookie -> ProxyTarget`` plus the listening servers: no app or handler per network.
A link-local IPv6 caller is named by its MAC, not its address (:mod:`cloudmeta.linux.peer`):
the namespace's neighbour entry for it (a netlink socket per namespace, kept open) and the
connection's saved SYN, read once per connection with the cookie and the peer.
Each namespace's sockets are served by :func:`cloudmeta.http.serve` behind one budget (head and
keep-alive timeouts, connection cap per namespace and per peer), so a flood on one network
stays there.

With ``metadata_workers`` > 1 other processes listen on the same binds (``reuse_port``:
SO_REUSEPORT, the kernel spreads connections over the processes; the cookie names the network
in every one of them). Their listeners follow this object's: a :class:`Followers` is told of
every ensure and remove once this process's own sockets are open or closed, and its
``remove`` returns only when no follower listens there any more. The budgets are per process.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from cloudmeta.http import Budget, Limits, Listener, QuietHandler, QuietServer, serve, unavailable
from cloudmeta.linux import open_socket_in_namespace
from cloudmeta.linux.peer import NeighbourTable, caller_mac, enable_saved_syn, saved_syn_mac
from cloudmeta.logs import get_logger, throttled_logger
from cloudmeta.metrics import instrument
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.errors import ProxyError
from cloudmeta.proxy.headers import Peer, ProxyTarget, peer_host

__all__ = ["Followers", "InlineHandler", "InlineListeners", "netns_cookie"]

SO_NETNS_COOKIE = getattr(socket, "SO_NETNS_COOKIE", 71)
BACKLOG = 1024

InlineHandler = Callable[[web.BaseRequest, ProxyTarget, Peer], Awaitable[web.StreamResponse]]

log = get_logger("proxy")
_alarm = throttled_logger("proxy")  # a caller drives these lines


def netns_cookie(sock: socket.socket) -> bytes:
    """The 8-byte cookie naming the network namespace ``sock`` lives in."""
    return sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)


class Followers(Protocol):
    """Other processes' listeners that mirror these (:mod:`cloudmeta.inline_workers`)."""

    async def ensure(self, namespace: str, target: ProxyTarget, binds: Sequence[Bind]) -> None:
        """Listen in ``namespace`` too (after this process does)."""

    async def remove(self, namespace: str) -> None:
        """Stop listening in ``namespace``; return when none of them listens there."""


@dataclass(frozen=True, slots=True)
class _Connection:
    """What one accepted connection is: its namespace's cookie and the caller."""

    cookie: bytes
    peer: Peer


@dataclass(slots=True)
class _Listener:
    target: ProxyTarget
    binds: tuple[Bind, ...]
    cookie: bytes
    served: Listener
    neighbours: NeighbourTable | None
    namespace: str


class InlineListeners:
    """Listeners per namespace, all dispatched to ``handler(request, target, peer)``."""

    def __init__(
        self,
        handler: InlineHandler,
        limits: Limits | None = None,
        *,
        metrics: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self._handler = handler
        self._limits = limits or Limits()
        self._reuse_port = reuse_port
        self.followers: Followers | None = None
        dispatch = instrument(self._dispatch, "proxy", "inline", metrics)
        self._http = QuietServer(dispatch, keepalive_timeout=self._limits.keepalive_timeout)
        self._by_namespace: dict[str, _Listener] = {}
        self._by_cookie: dict[bytes, _Listener] = {}

    def __len__(self) -> int:
        return len(self._by_namespace)

    def budget_of(self, namespace: str) -> Budget | None:
        """The namespace's connection budget (open, refused, timed out), for tests and stats."""
        listener = self._by_namespace.get(namespace)
        return listener.served.budget if listener else None

    def target_of(self, namespace: str) -> ProxyTarget | None:
        listener = self._by_namespace.get(namespace)
        return listener.target if listener else None

    async def ensure(self, namespace: str, target: ProxyTarget, binds: Sequence[Bind]) -> None:
        """Listen in ``namespace`` for ``target`` (idempotent; a change re-opens the sockets)."""
        wanted = tuple(binds)
        current = self._by_namespace.get(namespace)
        if current is not None and current.target == target and current.binds == wanted:
            return
        if current is not None:
            await self.remove(namespace)
        sockets: list[socket.socket] = []
        try:
            for bind in wanted:
                sock = open_socket_in_namespace(
                    namespace,
                    bind.host,
                    bind.port,
                    interface=bind.interface,
                    backlog=BACKLOG,
                    reuse_port=self._reuse_port,
                )
                sockets.append(sock)
                if sock.family == socket.AF_INET6:
                    enable_saved_syn(sock)
        except Exception as exc:
            for sock in sockets:
                sock.close()
            raise ProxyError(f"cannot open the metadata listeners in {namespace}: {exc}") from exc
        if not sockets:
            raise ProxyError(f"no bind address given for namespace {namespace}")
        cookie = netns_cookie(sockets[0])
        other = self._by_cookie.get(cookie)
        if other is not None:
            for sock in sockets:
                sock.close()
            raise ProxyError(
                f"namespace {namespace} already serves {other.target.uuid} under another name"
            )
        table = None
        if any(sock.family == socket.AF_INET6 for sock in sockets):
            try:
                table = NeighbourTable.open(namespace)
            except Exception as exc:
                for sock in sockets:
                    sock.close()
                raise ProxyError(f"cannot read the neighbours of {namespace}: {exc}") from exc
        listener = _Listener(
            target,
            wanted,
            cookie,
            await serve(sockets, self._http, self._limits, shared=True, name=namespace),
            table,
            namespace,
        )
        self._by_namespace[namespace] = listener
        self._by_cookie[cookie] = listener
        log.info(
            "inline metadata listener up",
            namespace=namespace,
            target=target.uuid,
            binds=[str(b) for b in wanted],
        )
        if self.followers is not None:
            await self.followers.ensure(namespace, target, wanted)

    async def remove(self, namespace: str) -> None:
        listener = self._by_namespace.pop(namespace, None)
        if listener is None:
            return
        self._by_cookie.pop(listener.cookie, None)
        await listener.served.close()
        if listener.neighbours is not None:
            listener.neighbours.close()
        log.info("inline metadata listener down", namespace=namespace)
        if self.followers is not None:
            await self.followers.remove(namespace)

    async def close(self) -> None:
        for namespace in list(self._by_namespace):
            await self.remove(namespace)
        await self._http.shutdown(1.0)

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        protocol = request.protocol
        facts: _Connection | None = getattr(protocol, "facts", None)
        if facts is None:
            # Once per connection: under uvloop each get_extra_info("socket") builds a socket
            # object, and the cookie, the peer and the saved SYN are more system calls.
            transport = request.transport
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None:
                return web.Response(status=500, text="connection already closed\n")
            cookie = netns_cookie(sock)
            known = self._by_cookie.get(cookie)
            peername = sock.getpeername()
            mac = None
            if sock.family == socket.AF_INET6:
                saved = saved_syn_mac(sock)  # read (and freed) for every IPv6 connection
                if known is not None and known.neighbours is not None and peername[3]:
                    entry = known.neighbours.mac_of(peername[0].split("%")[0], peername[3])
                    mac, conflict = caller_mac(saved, entry)
                    if conflict:
                        _alarm.warning(
                            "SYN and neighbour entry name different MACs",
                            namespace=known.namespace,
                            peer=peername[0],
                            syn_mac=saved,
                            neighbour_mac=entry,
                        )
            namespace = known.namespace if known is not None else None
            facts = _Connection(cookie, Peer(peer_host(peername), mac, namespace))
            if isinstance(protocol, QuietHandler):
                protocol.facts = facts
        # Per request: a namespace removed while its connections stay open is refused.
        served = self._by_cookie.get(facts.cookie)
        if served is None:
            return unavailable("metadata listener removed")
        return await self._handler(request, served.target, facts.peer)
