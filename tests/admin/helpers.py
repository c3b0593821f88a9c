"""A real admin API in the test's event loop, on a free loopback port, and a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cloudmeta.adminclient import AdminClient
from cloudmeta.api.admin import build_admin_app
from cloudmeta.api.server import ServedApp, serve
from cloudmeta.config import Config


@asynccontextmanager
async def running_admin(config: Config) -> AsyncIterator[tuple[str, AdminClient]]:
    app = ServedApp("admin", build_admin_app, lambda c: ("127.0.0.1", 0))
    async with serve(config, [app]) as bound:
        host, port = bound["admin"]
        url = f"http://{host}:{port}"
        client = AdminClient(config, url=url)
        try:
            yield url, client
        finally:
            await client.close()
