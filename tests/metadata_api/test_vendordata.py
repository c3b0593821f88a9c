"""DynamicJSON vendordata against a real local HTTP target that trickles its answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cloudmeta.api.metadata.vendordata import DynamicVendordata
from cloudmeta.documents import Instance

TRICKLE_SECONDS = 10.0


@pytest.fixture
async def trickle_target() -> AsyncIterator[str]:
    """``/trickle`` sends one byte every 0.2 s for 10 s: every read is within ``sock_read``,
    so only a total budget stops it. ``/fast`` answers at once."""

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"slow": "')
        end = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < end:
            await response.write(b"x")
            await asyncio.sleep(0.2)
        await response.write(b'"}')
        return response

    async def fast(request: web.Request) -> web.Response:
        return web.json_response({"from": "fast"})

    app = web.Application()
    app.router.add_post("/trickle", trickle)
    app.router.add_post("/fast", fast)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


async def test_trickling_target_is_cut_by_the_total_budget(trickle_target: str) -> None:
    connect, read = 3.0, 0.5  # Nova's minimum connect timeout; a short read timeout
    vendordata = DynamicVendordata(
        [f"slow@{trickle_target}/trickle", f"fast@{trickle_target}/fast"], connect, read
    )
    instance = Instance(id="cmt-i", project_id="cmt-p", hostname="cmt-h", name="cmt-h")
    try:
        started = time.monotonic()
        result = await vendordata.fetch(instance)
        elapsed = time.monotonic() - started
    finally:
        await vendordata.close()
    print(f"\nvendor_data2 with a trickling target answered in {elapsed:.2f} s")
    assert result == {"fast": {"from": "fast"}}
    assert elapsed < connect + read + 1.0 < TRICKLE_SECONDS
