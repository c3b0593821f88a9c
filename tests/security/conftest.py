"""The security suite reuses the proxy harness (tests/proxy) and tests/support."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS, _TESTS / "proxy", _TESTS / "metadata_api"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


import aiohttp  # noqa: E402
import pytest  # noqa: E402
from aiohttp.test_utils import TestServer  # noqa: E402
from metadata_cloud import Api, build_cloud  # noqa: E402

from cloudmeta.api.metadata import make_metadata_app  # noqa: E402
from cloudmeta.inventory import Store  # noqa: E402


@pytest.fixture
async def api(make_config: Any) -> AsyncIterator[Api]:
    """The metadata API alone on a loopback port over tests/metadata_api's small cloud."""
    config = make_config()
    store = await Store.open(config)
    server = TestServer(make_metadata_app(config, store), host="127.0.0.1", port=0)
    session = aiohttp.ClientSession()
    try:
        cloud = await build_cloud(store)
        await server.start_server()
        yield Api(f"http://127.0.0.1:{server.port}", session, cloud, store, server)
    finally:
        await session.close()
        await server.close()
        await store.close()
