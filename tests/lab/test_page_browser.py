"""The lab page in Debian's Chromium without a lab (no root): a real admin API holds networks
and a router with hostile names, a real HTTP server plays ``/metrics`` (prometheus_client's own
text, growing at each scrape); the page must chart requests/s and p99 and render every name as
text."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web
from pagekit import CHROMIUM, FLAGS, artefact_dir
from playwright.async_api import async_playwright
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from admin.helpers import running_admin
from cloudmeta.config import Config
from cloudmeta.lab.state import LabState
from cloudmeta.lab.web import start_page

pytestmark = pytest.mark.timeout(120)

HOSTILE = '<img src=x onerror="window.cmtPwned=1">cmt-<script>window.cmtPwned=2</script>'


@pytest.fixture
async def metrics_url() -> AsyncIterator[str]:
    """``/metrics`` whose proxy and API hops have done 20 and 10 more requests at each scrape
    (the agent hop none: no line is drawn for it)."""
    registry = CollectorRegistry()
    requests = Counter(
        "cloudmeta_metadata_requests_total", "r", ["hop", "status"], registry=registry
    )
    duration = Histogram(
        "cloudmeta_metadata_request_duration_seconds", "d", ["hop"], registry=registry
    )

    async def metrics(_: web.Request) -> web.Response:
        for hop, count, seconds in (("proxy", 20, 0.004), ("api", 10, 0.0008)):
            for _ in range(count):
                requests.labels(hop=hop, status="200").inc()
                duration.labels(hop=hop).observe(seconds)
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        await runner.cleanup()


async def test_chart_and_hostile_names_in_chromium(
    make_config: Callable[..., Config],
    metrics_url: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    config = make_config()
    shots = artefact_dir(tmp_path_factory.getbasetemp().parent, "lab-page-chart")
    async with running_admin(config) as (_, client):
        network = await client.create_network(HOSTILE)
        subnet = await client.create_subnet(network["id"], "203.0.113.0/24", name="s")
        router = await client.create_router(HOSTILE)
        await client.add_router_interface(router["id"], subnet["id"])
        page_server = await start_page(config, client, LabState(), 0, metrics_url=metrics_url)
        try:
            async with async_playwright() as driver:
                context = await driver.chromium.launch_persistent_context(
                    user_data_dir=str(tmp_path / "cmt-chromium-profile"),
                    executable_path=CHROMIUM,
                    headless=True,
                    args=FLAGS,
                )
                page = await context.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                await page.goto(page_server.url)
                # Two rates need three scrapes; then both charts draw a line per hop.
                await page.wait_for_function(
                    "() => document.querySelectorAll('#chart-rps polyline').length === 2"
                    " && document.querySelectorAll('#chart-p99 polyline').length === 2",
                    timeout=30_000,
                )
                assert await page.locator(".metrics").get_attribute("data-status") == "ok"
                status = await page.locator("#metrics-status").text_content() or ""
                assert "proxy:" in status and "api:" in status and "req/s" in status
                # Default buckets: every observation is in (0, 0.005], so p99 = 0.99 * 5 ms.
                shown = r"api: \S+ req/s, p99 4.95 ms · proxy: \S+ req/s, p99 4.95 ms"
                assert re.fullmatch(shown, status), status
                legend = await page.locator("#metrics-legend").text_content()
                assert legend == "proxyapi"
                # The network's name, and its router's in the router column.
                cells = page.locator("#networks td", has_text="cmt-")
                assert await cells.all_text_contents() == [HOSTILE, HOSTILE]
                # The router's name, and its interface on that network.
                cells = page.locator("#routers td", has_text="cmt-")
                assert await cells.all_text_contents() == [HOSTILE, f"{HOSTILE} 203.0.113.1"]
                assert await page.evaluate("window.cmtPwned") is None
                assert await page.locator("main img, main script").count() == 0
                await page.screenshot(path=str(shots / "lab-page-chart.png"), full_page=True)
                print(f"screenshot: {shots / 'lab-page-chart.png'}")
                assert errors == []
                await context.close()
        finally:
            await page_server.close()
