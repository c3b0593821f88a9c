"""``process`` mode: ``cloudmeta ns-metadata-proxy``, one small aiohttp process per namespace.

The seed's literal picture (neutron-ns-metadata-proxy): started inside the namespace, it
listens on the metadata address, rewrites the identity headers and relays over the agent's
unix socket. Only :mod:`cloudmeta.proxy.headers` decides what crosses. A link-local IPv6
caller's MAC (its neighbour entry in this namespace, and the connection's saved SYN, as the
inline listeners read them) goes with the request as ``X-Neutron-Source-MAC``, read once per
connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from cloudmeta.http import (
    Limits,
    Listener,
    QuietHandler,
    Relay,
    UpstreamError,
    refuse_forwarded_token_put,
    serve,
    unavailable,
)
from cloudmeta.linux.netns import make_listening_socket
from cloudmeta.linux.peer import NeighbourTable, caller_mac, enable_saved_syn, saved_syn_mac
from cloudmeta.logs import get_logger, throttled_logger
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.headers import Peer, ProxyTarget, clean_headers, peer_host

__all__ = ["LIMIT_OPTIONS", "NsMetadataProxy", "limit_argv", "limits_from", "run_ns_metadata_proxy"]

AGENT_TIMEOUT = 60.0
MAX_CONNECTIONS = 1024  # as haproxy mode's maxconn; the process serves one namespace
POOL_SIZE = 256

log = get_logger("proxy")

# The command-line options a proxy process takes its limits from (the manager passes the
# config's), with their defaults: the option, the Limits field, its type.
LIMIT_OPTIONS: tuple[tuple[str, str, type[float] | type[int]], ...] = (
    ("--header_timeout", "header_timeout", float),
    ("--keepalive_timeout", "keepalive_timeout", float),
    ("--max_connections", "max_connections", int),
    ("--max_connections_per_peer", "max_per_peer", int),
)
DEFAULT_LIMITS = Limits(max_connections=MAX_CONNECTIONS)


def limit_argv(limits: Limits) -> list[str]:
    """``limits`` as the proxy process's options."""
    return [arg for opt, name, _ in LIMIT_OPTIONS for arg in (opt, str(getattr(limits, name)))]


def limits_from(values: dict[str, float | int | None]) -> Limits:
    """Limits from parsed options (keyed by field name; None: the default)."""
    given: dict[str, Any] = {k: v for k, v in values.items() if v is not None}
    return replace(DEFAULT_LIMITS, **given)


class NsMetadataProxy:
    """Relays one namespace's metadata requests to the agent's unix socket."""

    def __init__(
        self, target: ProxyTarget, agent_socket: Path, limits: Limits | None = None
    ) -> None:
        self._target = target
        self._limits = limits or DEFAULT_LIMITS
        self._agent_socket = agent_socket
        # The agent's socket closes idle connections after the same keep-alive timeout:
        # the pool lets go of them first.
        self._relay = Relay(
            "http://metadata",
            lambda **pool: aiohttp.UnixConnector(path=str(agent_socket), **pool),
            timeout=AGENT_TIMEOUT,
            pool=POOL_SIZE,
            keepalive=self._limits.keepalive_timeout / 2,
        )
        self._listener: Listener | None = None
        self._neighbours: NeighbourTable | None = None
        self._log = throttled_logger("proxy")  # the agent's outages, per request

    async def start(self, binds: Sequence[Bind]) -> None:
        await self._relay.start()
        sockets = [
            make_listening_socket(bind.host, bind.port, interface=bind.interface, backlog=1024)
            for bind in binds
        ]
        for sock in sockets:
            if sock.family == socket.AF_INET6:
                enable_saved_syn(sock)
                if self._neighbours is None:
                    self._neighbours = NeighbourTable.open()  # this process's namespace
        self._listener = await serve(sockets, self.handle, self._limits)
        for bind in binds:
            log.info("metadata proxy listening", bind=str(bind), target=self._target.uuid)

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        if self._neighbours is not None:
            self._neighbours.close()
        await self._relay.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        refused = refuse_forwarded_token_put(request)
        if refused is not None:
            return refused
        peer = self._peer(request)
        if peer is None:
            return web.Response(status=500, text="connection already closed\n")
        headers = clean_headers(request.headers.items(), peer.ip, self._target, peer.mac)
        body = await request.read() if request.body_exists else None
        try:
            return await self._relay.send(
                request.method, request.rel_url.raw_path_qs, headers, body
            )
        except UpstreamError as exc:
            self._log.warning(
                "metadata agent unreachable", socket=str(self._agent_socket), error=str(exc)
            )
            return unavailable("The metadata agent is unavailable. Please try again later.")

    def _peer(self, request: web.BaseRequest) -> Peer | None:
        """The caller, read once per connection (a saved SYN can be read only once)."""
        protocol = request.protocol
        peer: Peer | None = getattr(protocol, "facts", None)
        if peer is not None:
            return peer
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return None
        peername = sock.getpeername()
        mac = None
        if sock.family == socket.AF_INET6:
            saved = saved_syn_mac(sock)
            if self._neighbours is not None and peername[3]:
                entry = self._neighbours.mac_of(peername[0].split("%")[0], peername[3])
                mac, conflict = caller_mac(saved, entry)
                if conflict:
                    self._log.warning(
                        "SYN and neighbour entry name different MACs",
                        peer=peername[0],
                        syn_mac=saved,
                        neighbour_mac=entry,
                    )
        peer = Peer(peer_host(peername), mac)
        if isinstance(protocol, QuietHandler):
            protocol.facts = peer
        return peer


async def run_ns_metadata_proxy(
    target: ProxyTarget, binds: Sequence[Bind], agent_socket: Path, limits: Limits | None = None
) -> None:
    """Serve until SIGTERM/SIGINT (the ProcessManager stops us with SIGTERM)."""
    proxy = NsMetadataProxy(target, agent_socket, limits)
    await proxy.start(binds)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await proxy.stop()
