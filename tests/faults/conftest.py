"""The fault suite reuses the proxy harness (tests/proxy) and tests/support."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

_TESTS = Path(__file__).resolve().parents[1]
for _path in (_TESTS, _TESTS / "proxy", _TESTS / "security", _TESTS / "metadata_api"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


import pytest  # noqa: E402
from harness import Chain, start_chain  # noqa: E402

from cloudmeta import linux  # noqa: E402
from cloudmeta.config import ProxyMode  # noqa: E402
from cloudmeta.proxy import MetadataProxyManager  # noqa: E402


@pytest.fixture
async def chain(request: pytest.FixtureRequest, make_config: object) -> AsyncIterator[Chain]:
    mode, overrides = request.param
    made = await start_chain(make_config, mode, **overrides)
    # The harness's manager has no monitor; give it the one the agents run (respawn).
    monitor = linux.ProcessMonitor(interval=0.5, action="respawn")
    if mode is not ProxyMode.INLINE:
        assert made.manager is not None
        await made.manager.close()
        made.manager = MetadataProxyManager(made.config, monitor)
        monitor.start()
    try:
        yield made
    finally:
        await monitor.close()
        await made.close()
