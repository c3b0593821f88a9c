"""The ``cloudmeta api`` process: one store, every HTTP application of the API side on it.

To serve another application from this process, add one :class:`ServedApp` line to
:data:`SERVED_APPS` (the metadata API does: its factory and ``[api] metadata_listen*``).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from cloudmeta.api.admin import build_admin_app
from cloudmeta.api.metadata import make_metadata_app
from cloudmeta.config import Config
from cloudmeta.inventory import Store
from cloudmeta.logs import get_logger

__all__ = ["SERVED_APPS", "AppFactory", "ServedApp", "run_api", "serve"]

_log = get_logger("api")

AppFactory = Callable[[Config, Store], web.Application | Awaitable[web.Application]]


@dataclass(frozen=True)
class ServedApp:
    """An application of the API process and where it listens, both read from the config."""

    name: str
    factory: AppFactory
    address: Callable[[Config], tuple[str, int]]


SERVED_APPS: list[ServedApp] = [
    ServedApp("admin", build_admin_app, lambda c: (c.admin.listen, c.admin.port)),
    ServedApp(
        "metadata", make_metadata_app, lambda c: (c.api.metadata_listen, c.api.metadata_listen_port)
    ),
]


@asynccontextmanager
async def serve(
    config: Config, apps: list[ServedApp] | None = None
) -> AsyncIterator[dict[str, tuple[str, int]]]:
    """Open the store, start every app; yield ``{name: (host, port)}`` as actually bound."""
    store = await Store.open(config)
    runners: list[web.AppRunner] = []
    bound: dict[str, tuple[str, int]] = {}
    try:
        for served in apps if apps is not None else SERVED_APPS:
            app = served.factory(config, store)
            if not isinstance(app, web.Application):
                app = await app
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            runners.append(runner)
            host, port = served.address(config)
            await web.TCPSite(runner, host, port, reuse_address=True).start()
            address = runner.addresses[0]
            bound[served.name] = (str(address[0]), int(address[1]))
            _log.info("listening", app=served.name, host=bound[served.name][0], port=address[1])
        yield bound
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        await store.close()


async def run_api(config: Config) -> None:
    """Serve until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(config) as bound:
        for name, (host, port) in bound.items():
            print(f"cloudmeta {name} API listening on http://{host}:{port}", flush=True)
        await stop.wait()
