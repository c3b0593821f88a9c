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
from metadata_cloud import Api, build_cloud  # noqa: E402

from cloudmeta.inventory import Store  # noqa: E402
from support.serving import shipped  # noqa: E402


@pytest.fixture
async def api(make_config: Any) -> AsyncIterator[Api]:
    """The metadata API alone on a loopback port over tests/metadata_api's small cloud."""
    config = make_config()
    store = await Store.open(config)
    try:
        cloud = await build_cloud(store)
        async with (
            shipped(config, store, "metadata") as port,
            aiohttp.ClientSession() as session,
        ):
            yield Api(f"http://127.0.0.1:{port}", session, cloud, store, port)
    finally:
        await store.close()
