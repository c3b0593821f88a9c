"""The API side as ``cloudmeta api`` serves it (:func:`cloudmeta.api.server.serve`), on a
loopback port, over a store the test already holds: no test serves a stack that does not ship."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cloudmeta.api.admin import build_admin_app
from cloudmeta.api.metadata import metadata_server
from cloudmeta.api.server import AppFactory, ServedApp, serve
from cloudmeta.config import Config
from cloudmeta.inventory import Store

FACTORIES: dict[str, AppFactory] = {"admin": build_admin_app, "metadata": metadata_server}


@asynccontextmanager
async def shipped(
    config: Config, store: Store, name: str, port: int = 0, host: str = "127.0.0.1"
) -> AsyncIterator[int]:
    """Serve the ``name`` app ("admin" or "metadata") on ``host:port``; yield the port."""
    app = ServedApp(name, FACTORIES[name], lambda _: (host, port))
    async with serve(config, [app], store=store) as bound:
        yield bound[name][1]
