"""``process`` mode: ``cloudmeta ns-metadata-proxy``, one small aiohttp process per namespace.

The seed's literal picture (neutron-ns-metadata-proxy): started inside the namespace, it
listens on the metadata address, rewrites the identity headers and relays over the agent's
unix socket. Only :mod:`cloudmeta.proxy.headers` decides what crosses.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Sequence
from pathlib import Path

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.linux.netns import make_listening_socket
from cloudmeta.logs import get_logger
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.guard import Budget, Limits, QuietServer, gated
from cloudmeta.proxy.headers import (
    HOP_BY_HOP,
    ProxyTarget,
    clean_headers,
    is_forbidden_token_put,
    peer_host,
)

__all__ = ["NsMetadataProxy", "run_ns_metadata_proxy"]

AGENT_TIMEOUT = 60.0
MAX_CONNECTIONS = 1024  # as haproxy mode's maxconn; the process serves one namespace

log = get_logger("proxy")


class NsMetadataProxy:
    """Relays one namespace's metadata requests to the agent's unix socket."""

    def __init__(
        self, target: ProxyTarget, agent_socket: Path, limits: Limits | None = None
    ) -> None:
        self._target = target
        self._budget = Budget(limits or Limits(max_connections=MAX_CONNECTIONS))
        self._agent_socket = agent_socket
        self._session: aiohttp.ClientSession | None = None
        self._servers: list[asyncio.AbstractServer] = []
        self._http = QuietServer(self.handle, access_log=None)

    async def start(self, binds: Sequence[Bind]) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(self._agent_socket), limit=256),
            timeout=aiohttp.ClientTimeout(total=AGENT_TIMEOUT),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )
        loop = asyncio.get_running_loop()
        for bind in binds:
            self._servers.append(
                await loop.create_server(
                    gated(self._http, self._budget),
                    sock=make_listening_socket(
                        bind.host, bind.port, interface=bind.interface, backlog=1024
                    ),
                    backlog=1024,
                )
            )
            log.info("metadata proxy listening", bind=str(bind), target=self._target.uuid)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        await self._http.shutdown(1.0)
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        assert self._session is not None
        if is_forbidden_token_put(request.method, request.path, request.headers.items()):
            return web.Response(
                status=403, text="A token request must not carry X-Forwarded-For.\n"
            )
        peer = peer_host(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        headers = clean_headers(request.headers.items(), peer, self._target)
        body = await request.read() if request.body_exists else None
        try:
            async with self._session.request(
                request.method,
                "http://metadata" + request.rel_url.raw_path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as resp:
                payload = await resp.read()
                out = CIMultiDict(
                    (k, v)
                    for k, v in resp.headers.items()
                    if k.lower() not in HOP_BY_HOP and k.lower() not in ("date", "server")
                )
                return web.Response(status=resp.status, body=payload, headers=out)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning(
                "metadata agent unreachable", socket=str(self._agent_socket), error=str(exc)
            )
            return web.Response(
                status=503,
                text="The metadata agent is unavailable. Please try again later.\n",
                headers={"Retry-After": "2"},
            )


async def run_ns_metadata_proxy(
    target: ProxyTarget, binds: Sequence[Bind], agent_socket: Path
) -> None:
    """Serve until SIGTERM/SIGINT (the ProcessManager stops us with SIGTERM)."""
    proxy = NsMetadataProxy(target, agent_socket)
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
