"""The metadata agent: identity resolution + signing + forwarding, reachable two ways.

* :meth:`MetadataAgent.handle_unix` serves the unix socket that ``process`` and ``haproxy``
  mode proxies forward to (they set ``X-Forwarded-For`` and the network/router header).
* :meth:`MetadataAgent.answer` is the same path for the inline listeners, which know the
  network/router from the socket that accepted the connection: no headers trusted, no hop.

A link-local IPv6 caller is resolved by its MAC: the one the proxy read (inline, process: the
neighbour entry, or the saved SYN), else the neighbour table of the namespace it reached
(haproxy); no MAC, or two for one address: 404.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import stat
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from cloudmeta.adminclient import AdminClient
from cloudmeta.agent.errors import AgentError
from cloudmeta.agent.forward import Forwarder
from cloudmeta.agent.identity import Caller, caller_from_forwarded, mac_from_neighbours
from cloudmeta.agent.lookup import PortCache
from cloudmeta.agent.ratelimit import RateLimiter
from cloudmeta.config import Config, ProxyMode
from cloudmeta.dhcp.driver import dhcp_namespace
from cloudmeta.http import (
    Limits,
    Listener,
    plain,
    refuse_forwarded_token_put,
    serve,
    unavailable,
    unix_socket,
)
from cloudmeta.l3.model import router_namespace
from cloudmeta.linux.errors import LinuxError
from cloudmeta.linux.peer import Neighbour, neighbours
from cloudmeta.logs import get_logger, throttled_logger
from cloudmeta.metrics import RATE_LIMITED, instrument
from cloudmeta.proxy.headers import (
    FORWARDED_FOR,
    NETWORK_ID_HEADER,
    ROUTER_ID_HEADER,
    SOURCE_MAC_HEADER,
    Peer,
    ProxyTarget,
)
from cloudmeta.proxy.inline import InlineListeners
from cloudmeta.signing import LocalMetadataApi

__all__ = ["MetadataAgent"]

SOCKET_MODE = 0o660
SOCKET_BACKLOG = 4096
BODY_TIMEOUT = 10.0

log = get_logger("agent")


class MetadataAgent:
    """Owns the port cache (and its feed task), the API pool and the unix socket server."""

    def __init__(
        self,
        config: Config,
        client: AdminClient,
        local_api: LocalMetadataApi | None = None,
        *,
        neighbour_table: Callable[[str], list[Neighbour]] = neighbours,
    ) -> None:
        self._config = config
        self._neighbours = neighbour_table  # namespace -> its IPv6 neighbour entries
        self.cache = PortCache(client)
        self.forwarder = Forwarder(config, local_api)
        self.limiter = _limiter(config)
        self._log = throttled_logger("agent")  # the request paths' lines: a caller drives them
        self._feed: asyncio.Task[None] | None = None
        self._unix: Listener | None = None
        self._inline: InlineListeners | None = None

    @property
    def inline(self) -> InlineListeners:
        """This agent's inline listeners (created on first use), for the proxy manager."""
        if self._inline is None:
            enabled = self._config.metrics_enabled
            self._inline = InlineListeners(
                instrument(self.handle_inline, "agent", "inline", enabled),
                Limits.from_config(self._config),
                metrics=enabled,
                # Other processes listen on the same binds (cloudmeta.inline_workers).
                reuse_port=self._config.metadata_workers > 1,
            )
        return self._inline

    async def start(self, unix_socket: bool = True) -> None:
        """Start the feed, the API pool and (``unix_socket``) the proxies' socket.

        Objects alive at start-up are frozen out of the cyclic GC: full collections over the
        heap of a big agent were the p99 latency (65 ms -> 16 ms at 64 connections).
        """
        gc.collect()
        gc.freeze()
        await self.forwarder.start()
        self._feed = asyncio.create_task(self.cache.follow(), name="agent-change-feed")
        if unix_socket:
            await self._listen_unix(self._config.proxy_socket_path)

    async def stop(self) -> None:
        if self._inline is not None:
            await self._inline.close()
        if self._unix is not None:
            await self._unix.close()
            with contextlib.suppress(FileNotFoundError):
                self._config.proxy_socket_path.unlink()
            self._unix = None
        if self._feed is not None:
            self._feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed
        await self.forwarder.close()

    async def _listen_unix(self, path: Path) -> None:
        _prepare_socket_path(path)
        sock = unix_socket(path, SOCKET_MODE, SOCKET_BACKLOG)
        # The proxies send whole heads and hold pooled connections: the timeouts only bound a
        # stuck or hostile local client, no connection cap.
        config = self._config
        # The socket's clients are process or haproxy proxies: the configured mode says which
        # (with inline configured, they are other tools' proxies of an unknown mode: "").
        mode = config.metadata_proxy_mode
        label = "" if mode is ProxyMode.INLINE else mode.value
        handler = instrument(self.handle_unix, "agent", label, config.metrics_enabled)
        self._unix = await serve([sock], handler, Limits.timeouts(config), name="agent-socket")
        log.info("metadata agent listening", socket=str(path))

    async def handle_unix(self, request: web.BaseRequest) -> web.StreamResponse:
        """A request from a proxy: trust its X-Forwarded-For and network/router header."""
        network_id = request.headers.get(NETWORK_ID_HEADER)
        router_id = request.headers.get(ROUTER_ID_HEADER)
        if network_id and router_id:
            return plain(400, f"Both network {network_id} and router {router_id} defined.")
        if not network_id and not router_id:
            return plain(400, "Neither network nor router defined.")
        forwarded = request.headers.getall(FORWARDED_FOR, [])
        if len(forwarded) != 1:
            return plain(400, "Exactly one X-Forwarded-For is required.")
        target = ProxyTarget(network_id=network_id or None, router_id=router_id or None)
        macs = request.headers.getall(SOURCE_MAC_HEADER, [])
        if len(macs) > 1:
            return plain(400, f"At most one {SOURCE_MAC_HEADER} is allowed.")
        return await self.answer(request, target, Peer(forwarded[0], macs[0] if macs else None))

    async def handle_inline(
        self, request: web.BaseRequest, target: ProxyTarget, peer: Peer
    ) -> web.StreamResponse:
        """A request straight from an instance on an inline listener."""
        refused = refuse_forwarded_token_put(request)
        if refused is not None:
            return refused
        return await self.answer(request, target, peer)

    def namespace_of(self, target: ProxyTarget) -> str:
        """The namespace a proxy for ``target`` runs in on this host (the DHCP or L3 agent's
        naming, with this host's ``namespace_prefix``)."""
        if target.network_id is not None:
            return dhcp_namespace(self._config, target.network_id)
        return router_namespace(self._config.namespace_prefix, str(target.router_id))

    def _neighbour_mac(self, caller: Caller, namespace: str) -> str | None:
        """The caller's MAC from the namespace's neighbour table (one netlink dump)."""
        try:
            return mac_from_neighbours(caller, self._neighbours(namespace))
        except LinuxError as exc:
            self._log.warning("neighbour table unreadable", namespace=namespace, error=str(exc))
            return None

    async def answer(
        self, request: web.BaseRequest, target: ProxyTarget, peer: Peer
    ) -> web.StreamResponse:
        """Resolve the caller on ``target``, sign, forward; ``peer`` is who the proxy saw."""
        try:
            caller = caller_from_forwarded(peer.ip, peer.mac)
        except AgentError as exc:
            return plain(400, str(exc))
        if caller.link_local and caller.mac is None:
            namespace = peer.namespace or self.namespace_of(target)
            mac = self._neighbour_mac(caller, namespace)
            if mac is None:
                self._log.warning(
                    "link-local caller without a known MAC",
                    network_id=target.network_id,
                    router_id=target.router_id,
                    namespace=namespace,
                    ip=caller.ip,
                )
                return plain(404, "Instance was not found: the caller's MAC is unknown.")
            caller = caller_from_forwarded(peer.ip, mac)
        if self.limiter is not None:
            # Before the lookup, as haproxy's deny is before the agent: per source address
            # (per MAC for a link-local caller).
            wait = self.limiter.allow(target.uuid, caller.ip, time.monotonic(), caller.mac)
            if wait > 0:
                RATE_LIMITED.inc()
                return plain(
                    429,
                    "Too many metadata requests from this address.",
                    **{"Retry-After": self.limiter.retry_after(wait)},
                )
        try:
            if target.network_id is not None:
                networks: tuple[str, ...] = (target.network_id,)
            else:
                networks = await self.cache.router_networks(str(target.router_id))
            found = await self.cache.find(networks, caller)
        except Exception as exc:
            self._log.warning("port lookup failed: admin API unavailable", error=str(exc))
            return unavailable(
                "The port directory is temporarily unavailable. Please try again later."
            )
        if found.owner is None:
            where = (
                f"network {target.network_id}"
                if target.network_id
                else (f"router {target.router_id}")
            )
            self._log.warning(
                "no unique port for the caller",
                network_id=target.network_id,
                router_id=target.router_id,
                networks=list(networks),
                ip=caller.ip,
                mac=caller.mac,
                matches=found.matches,
            )
            return plain(404, f"Instance was not found on {where}.")
        if not request.body_exists and self.forwarder.local:
            return await self.forwarder.forward_local(request, caller.ip, found.owner)
        body = b""
        if request.body_exists:
            try:
                async with asyncio.timeout(BODY_TIMEOUT):
                    body = await request.read()
            except TimeoutError:
                return plain(408, "The request body did not arrive in time.")
            except web.HTTPRequestEntityTooLarge:
                return plain(413, "Request body too large.")
        return await self.forwarder.forward(
            request.method,
            request.rel_url.raw_path_qs,
            request.headers.items(),
            body,
            caller.ip,
            found.owner,
        )


def _limiter(config: Config) -> RateLimiter | None:
    """``[metadata_rate_limiting]`` for the inline and process modes; in haproxy mode the
    generated config's stick-tables enforce it before a request reaches the agent."""
    options = config.metadata_rate_limiting
    if not options.rate_limit_enabled or config.metadata_proxy_mode is ProxyMode.HAPROXY:
        return None
    return RateLimiter(
        options.base_window_duration,
        options.base_query_rate_limit,
        options.burst_window_duration,
        options.burst_query_rate_limit,
        options.ip_versions,
    )


def _prepare_socket_path(path: Path) -> None:
    """Create the socket's directory and remove a stale socket left by a previous agent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise AgentError(
                f"{path} exists and is not a socket; remove it or change metadata_proxy_socket"
            )
        path.unlink()
