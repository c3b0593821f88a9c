"""Serving the lab page beside ``lab up``: through :func:`cloudmeta.http.serve`, as every
listener of cloudmeta, on 127.0.0.1 only."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from aiohttp import web

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.http import Limits, Listener, QuietServer, serve, tcp_sockets
from cloudmeta.lab.state import LabState
from cloudmeta.lab.web.app import build_app
from cloudmeta.lab.web.live import LabView

__all__ = ["DEFAULT_PORT", "HOST", "LabPage", "serve_view", "start_page"]

HOST = "127.0.0.1"
DEFAULT_PORT = 8780
_SHUTDOWN_TIMEOUT = 1.0  # open event streams end at once on teardown


@dataclass(slots=True)
class LabPage:
    """A running page: its URL, and what :meth:`close` stops."""

    url: str
    view: LabView
    runner: web.AppRunner
    listener: Listener

    async def close(self) -> None:
        await self.view.end_streams()
        await self.listener.close(_SHUTDOWN_TIMEOUT)
        await self.runner.cleanup()
        await self.view.close()


async def start_page(
    config: Config,
    client: AdminClient,
    state: LabState,
    port: int = DEFAULT_PORT,
    *,
    metrics_url: str | None = None,
) -> LabPage:
    """Serve the page of the lab ``state`` on ``127.0.0.1:port`` (OSError if it is taken)."""
    sockets = tcp_sockets(HOST, port)
    view = LabView(config, client, state, metrics_url=metrics_url)
    try:
        await view.start()
    except BaseException:
        for sock in sockets:
            sock.close()
        await view.close()
        raise
    try:
        return await serve_view(config, view, sockets)
    except BaseException:
        await view.close()
        raise


async def serve_view(config: Config, view: LabView, sockets: list[socket.socket]) -> LabPage:
    """Serve ``view``'s page on listening ``sockets`` (closed on failure)."""
    port = sockets[0].getsockname()[1]
    runner = web.AppRunner(
        build_app(view, port),
        access_log=None,
        handle_signals=False,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
    try:
        await runner.setup()
        assert runner.server is not None
        http = QuietServer.of_app(
            runner.server, keepalive_timeout=config.metadata_proxy_keepalive_timeout
        )
        listener = await serve(sockets, http, Limits.timeouts(config))
    except BaseException:
        for sock in sockets:
            sock.close()
        await runner.cleanup()
        raise
    return LabPage(f"http://{HOST}:{port}/", view, runner, listener)
