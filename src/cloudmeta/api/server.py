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
from cloudmeta.api.workers import WorkerPool, freeze_startup_heap
from cloudmeta.config import Config
from cloudmeta.inventory import Store
from cloudmeta.logs import get_logger

__all__ = ["SERVED_APPS", "AppFactory", "ServedApp", "serve"]

_log = get_logger("api")

Served = web.Application | web.Server
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
        return made  # an app starts and stops with its runner
    if isinstance(made, AbstractAsyncContextManager):
        return await stack.enter_async_context(made)
    assert isinstance(made, Awaitable)
    return await _enter(stack, await made)


# How long a stop waits for requests in flight: the admin API's long polls (up to 30 s) would
# otherwise hold every shutdown (SIGTERM, `lab down`) for aiohttp's default 60 s; their clients
# retry anyway.
_SHUTDOWN_TIMEOUT = 1.0


def _runner(served: Served) -> web.BaseRunner:
    if isinstance(served, web.Application):
        return web.AppRunner(
            served, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT
        )
    return web.ServerRunner(served, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT)


@asynccontextmanager
async def serve(
    config: Config, apps: list[ServedApp] | None = None
) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """Open the store, start every app (and its workers); yield ``{name: (host, port)}``."""
    store = await Store.open(config)
    bound: dict[str, tuple[str, int]] = {}
    async with AsyncExitStack() as stack:
        stack.push_async_callback(store.close)
        for served in apps if apps is not None else SERVED_APPS:
            runner = _runner(await _enter(stack, served.factory(config, store)))
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            host, port = served.address(config)
            workers = served.workers(config)
            await web.TCPSite(
                runner, host, port, reuse_address=True, reuse_port=workers > 1
            ).start()
            address = runner.addresses[0]
            bound[served.name] = (str(address[0]), int(address[1]))
            if workers > 1:
                pool = WorkerPool(config, *bound[served.name], workers - 1)
                await pool.start()
                stack.push_async_callback(pool.close)
            _log.info(
                "listening", app=served.name, host=address[0], port=address[1], workers=workers
            )
        freeze_startup_heap()
        yield bound
