"""A real inventory (SQLite in the test's state dir) and the metadata API on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from metadata_cloud import Api, build_cloud

from cloudmeta.config import Config
from cloudmeta.inventory import Store
from support.serving import shipped


@pytest.fixture
async def store(make_config: Callable[..., Config]) -> AsyncIterator[Store]:
    s = await Store.open(make_config())
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def api_config(make_config: Callable[..., Config]) -> dict[str, Any]:
    """Per-test overrides of the ``[api]`` section (tests update it before ``api`` starts)."""
    return {}


@pytest.fixture
async def api(
    store: Store, make_config: Callable[..., Config], api_config: dict[str, Any]
) -> AsyncIterator[Api]:
    cloud = await build_cloud(store)
    config = make_config(api={**api_config})
    async with shipped(config, store, "metadata") as port, aiohttp.ClientSession() as session:
        yield Api(f"http://127.0.0.1:{port}", session, cloud, store, port)
