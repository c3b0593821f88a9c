"""The ``cloudmeta api`` process: one store, every HTTP application of the API side on it.

To serve another application from this process, add one :class:`ServedApp` line to
:data:`SERVED_APPS` (the metadata API does: its server and ``[api] metadata_listen*``).

The metadata API binds with SO_REUSEPORT and, with ``[api] metadata_workers = N``, N-1 worker
processes (:mod:`cloudmeta.api.workers`) serve it on the same port next to this process. Each
worker opens its own store; all of them learn of a write through :meth:`Store.change_token`
before answering, so an admin change is seen by the next request whichever process gets it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from cloudmeta.api.admin import build_admin_app
from cloudmeta.api.metadata import metadata_server
from cloudmeta.api.workers import api_worker_pool, freeze_startup_heap
from cloudmeta.config import Config
from cloudmeta.http import Limits, QuietServer, tcp_sockets
from cloudmeta.http import serve as serve_sockets
from cloudmeta.inventory import Store
from cloudmeta.logs import get_logger

__all__ = ["SERVED_APPS", "AppFactory", "ServedApp", "serve"]

_log = get_logger("api")

Served = web.Application | QuietServer
# An app (or an awaitable of one), or a context manager serving a low-level server or an app.
AppFactory = Callable[
    [Config, Store],
    web.Application | Awaitable[web.Application] | AbstractAsyncContextManager[Served],
]


@dataclass(frozen=True)
class ServedApp:
    """An application of the API process and where it listens, both read from the config.

    ``workers`` (for the metadata API) is how many processes in all serve it on the port.
    """

    name: str
    factory: AppFactory
    address: Callable[[Config], tuple[str, int]]
    workers: Callable[[Config], int] = lambda _: 1


SERVED_APPS: list[ServedApp] = [
    ServedApp("admin", build_admin_app, lambda c: (c.admin.listen, c.admin.port)),
    ServedApp(
        "metadata",
        metadata_server,
        lambda c: (c.api.metadata_listen, c.api.metadata_listen_port),
        lambda c: c.api.metadata_workers,
    ),
]


async def _enter(stack: AsyncExitStack, made: object) -> Served:
    if isinstance(made, web.Application):
        return made
    if isinstance(made, AbstractAsyncContextManager):
        served: Served = await stack.enter_async_context(made)
        return served
    assert isinstance(made, Awaitable)
    return await _enter(stack, await made)


# How long a stop waits for requests in flight: the admin API's long polls (up to 30 s) would
# otherwise hold every shutdown (SIGTERM, `lab down`) for aiohttp's default 60 s; their clients
# retry anyway.
_SHUTDOWN_TIMEOUT = 1.0


async def _server(stack: AsyncExitStack, config: Config, served: Served) -> QuietServer:
    """The low-level server to put on the sockets; an app starts (and stops) with its runner."""
    if isinstance(served, QuietServer):
        return served
    runner = web.AppRunner(
        served, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    assert runner.server is not None
    keepalive = config.metadata_proxy_keepalive_timeout
    return QuietServer.of_app(runner.server, keepalive_timeout=keepalive)


@asynccontextmanager
async def serve(
    config: Config,
    apps: list[ServedApp] | None = None,
    *,
    store: Store | None = None,
    servers: dict[str, QuietServer] | None = None,
) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """Start every app (and its workers) over ``store`` (by default one opened here, and closed
    after); yield ``{name: (host, port)}``. Every app is served by :func:`cloudmeta.http.serve`
    with the same timeouts as every other listener of cloudmeta. ``servers`` gets each app's
    low-level server, for a caller in this process (the all-in-one's agent)."""
    bound: dict[str, tuple[str, int]] = {}
    limits = Limits.timeouts(config)
    async with AsyncExitStack() as stack:
        if store is None:
            store = await Store.open(config)
            stack.push_async_callback(store.close)
        for served in apps if apps is not None else SERVED_APPS:
            http = await _server(stack, config, await _enter(stack, served.factory(config, store)))
            if servers is not None:
                servers[served.name] = http
            host, port = served.address(config)
            workers = served.workers(config)
            listener = await serve_sockets(
                tcp_sockets(host, port, reuse_port=workers > 1), http, limits, name=served.name
            )
            stack.push_async_callback(listener.close, _SHUTDOWN_TIMEOUT)
            address = listener.addresses[0]
            assert isinstance(address, tuple)
            bound[served.name] = (str(address[0]), int(address[1]))
            if workers > 1:
                pool = api_worker_pool(config, *bound[served.name], workers - 1)
                await pool.start()
                stack.push_async_callback(pool.close)
            _log.info(
                "listening", app=served.name, host=address[0], port=address[1], workers=workers
            )
        freeze_startup_heap()
        yield bound
