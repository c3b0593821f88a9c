"""A real admin API in the test's event loop, on a free loopback port, and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from cloudmeta.adminclient import AdminClient
from cloudmeta.api.admin import build_admin_app
from cloudmeta.api.server import ServedApp, serve
from cloudmeta.config import Config
from cloudmeta.inventory import Store


@asynccontextmanager
async def running_admin(
    config: Config, stores: list[Store] | None = None
) -> AsyncIterator[tuple[str, AdminClient]]:
    """``stores``, when given, receives the server's store (for tests that watch it)."""

    def build(config: Config, store: Store) -> web.Application:
        if stores is not None:
            stores.append(store)
        return build_admin_app(config, store)

    app = ServedApp("admin", build, lambda c: ("127.0.0.1", 0))
    async with serve(config, [app]) as bound:
        host, port = bound["admin"]
        url = f"http://{host}:{port}"
        client = AdminClient(config, url=url)
        try:
            yield url, client
        finally:
            await client.close()
