"""The lab page's parts without a lab: rates from Prometheus text, curl's answers, the
scraper against a real HTTP server, the page's address check and headers, its event stream
over a real admin API."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from admin.helpers import running_admin
from cloudmeta.adminclient import AdminClient, ChangeBatch
from cloudmeta.adminclient.types import Change
from cloudmeta.config import Config
from cloudmeta.http import tcp_sockets
from cloudmeta.lab.state import LabInstance, LabState
from cloudmeta.lab.web import live
from cloudmeta.lab.web.documents import Fetch, RecentRequests, parse_curl
from cloudmeta.lab.web.live import LabView, MetricsScraper, stale_rows
from cloudmeta.lab.web.rates import parse, quantile, rates
from cloudmeta.lab.web.server import serve_view, start_page

BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1)


class _Path:
    """The two metrics of the metadata path, made by prometheus_client itself."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cloudmeta_metadata_requests_total",
            "requests",
            ["hop", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "cloudmeta_metadata_request_duration_seconds",
            "latency",
            ["hop"],
            buckets=BUCKETS,
            registry=self.registry,
        )

    def observe(self, hop: str, seconds: float, count: int, status: str = "200") -> None:
        for _ in range(count):
            self.requests.labels(hop=hop, status=status).inc()
            self.duration.labels(hop=hop).observe(seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_rates_per_hop_over_the_interval() -> None:
    path = _Path()
    path.observe("proxy", 0.002, 50)
    before = parse(path.text(), at=100.0)
    path.observe("proxy", 0.003, 90)
    path.observe("proxy", 0.08, 10)
    path.observe("proxy", 0.003, 5, status="404")
    path.observe("api", 0.0005, 20)
    now = parse(path.text(), at=102.0)
    found = {r.hop: r for r in rates(before, now)}
    assert set(found) == {"api", "proxy"}
    assert found["proxy"].rps == pytest.approx(105 / 2)  # every status counts
    # 105 new requests: 95 in (0.001, 0.005], 10 in (0.05, 0.1]; rank 103.95 falls in the last
    assert found["proxy"].p99_seconds == pytest.approx(0.05 + 0.05 * (103.95 - 95) / 10)
    assert found["api"].rps == pytest.approx(10.0)
    assert found["api"].p99_seconds == pytest.approx(0.001 * 19.8 / 20)


def test_a_restart_counts_from_zero_and_an_idle_hop_has_no_p99() -> None:
    old, new = _Path(), _Path()
    old.observe("agent", 0.002, 500)
    new.observe("agent", 0.002, 4)  # the process restarted: its counters began again
    found = rates(parse(old.text(), 10.0), parse(new.text(), 12.0))
    assert [(r.hop, r.rps) for r in found] == [("agent", 2.0)]
    assert found[0].p99_seconds is not None and found[0].p99_seconds <= 0.005
    idle = rates(parse(new.text(), 12.0), parse(new.text(), 14.0))
    assert [(r.rps, r.p99_seconds) for r in idle] == [(0.0, None)]


def test_quantile_edges() -> None:
    assert quantile(0.99, {}) is None
    assert quantile(0.99, {0.1: 3.0}) is None  # no +Inf bucket: not a histogram
    assert quantile(0.99, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.5, {0.1: 0.0, float("inf"): 4.0}) == 0.1  # beyond the last bound


def test_parse_ignores_other_metrics_and_sums_statuses() -> None:
    text = (
        "# TYPE other_total counter\nother_total 5\n"
        "# TYPE cloudmeta_metadata_requests_total counter\n"
        'cloudmeta_metadata_requests_total{hop="proxy",status="200"} 3\n'
        'cloudmeta_metadata_requests_total{hop="proxy",status="404"} 4\n'
    )
    assert parse(text, 1.0).requests == {"proxy": 7.0}


def test_parse_curl_splits_body_and_timing() -> None:
    body = '{"uuid": "x"}\n'
    fetch = parse_curl("/p", "GET", 5.0, body + "\n@@cmt@@ 200 0.012345 14", "")
    assert (fetch.status, fetch.milliseconds, fetch.size, fetch.body) == (200, 12.3, 14, body)
    failed = parse_curl("/p", "GET", 5.0, "", "curl: (7) Failed to connect\n")
    assert (failed.status, failed.body) == (0, "curl: (7) Failed to connect")


def test_recent_requests_keep_the_newest_first_without_bodies() -> None:
    recent = RecentRequests()
    for i in range(40):
        recent.add("lab-1", Fetch(float(i), "GET", f"/{i}", 200, 1.0, 2, "secret body"))
    shown = recent.of("lab-1")
    assert len(shown) == 30 and shown[0]["path"] == "/39" and shown[-1]["path"] == "/10"
    assert all("body" not in r for r in shown)
    recent.forget("lab-1")
    assert recent.of("lab-1") == []


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[str, Callable[[int, str], None]]]:
    """A real HTTP server whose ``/metrics`` answers what the test sets."""
    answer = {"status": 404, "text": "404: Not Found"}

    async def metrics(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer cmt-token":
            return web.Response(status=401, text="401: Unauthorized")  # as the admin API
        return web.Response(status=answer["status"], text=answer["text"])

    def set_answer(status: int, text: str) -> None:
        answer.update(status=status, text=text)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/metrics", set_answer
    finally:
        await runner.cleanup()


async def test_scraper_says_no_metrics_on_404_then_charts_them(
    metrics_server: tuple[str, Callable[[int, str], None]],
) -> None:
    url, set_answer = metrics_server
    async with aiohttp.ClientSession() as session:
        anonymous = MetricsScraper(session, url)
        await anonymous.scrape()
        assert anonymous.status == f"no metrics ({url} answered 401)"
        scraper = MetricsScraper(session, url, "cmt-token")
        await scraper.scrape()
        assert scraper.view()["status"] == "no metrics"
        set_answer(500, "oops")
        await scraper.scrape()
        assert scraper.status == f"no metrics ({url} answered 500)"
        path = _Path()
        path.observe("proxy", 0.002, 3)
        set_answer(200, path.text())
        await scraper.scrape()
        assert scraper.status == "ok" and list(scraper.series) == []  # one scrape: no rate yet
        path.observe("proxy", 0.002, 7)
        set_answer(200, path.text())
        await scraper.scrape()
        [point] = scraper.series
        assert point["hops"]["proxy"]["rps"] > 0
        assert point["hops"]["proxy"]["p99_ms"] == pytest.approx(4.97, abs=0.01)
    async with aiohttp.ClientSession() as session:
        gone = MetricsScraper(session, "http://127.0.0.1:9/metrics")
        await gone.scrape()
        assert gone.status.startswith("no metrics (http://127.0.0.1:9/metrics unreachable")


async def test_page_answers_only_on_its_own_address_with_strict_headers(
    make_config: Callable[..., Config],
) -> None:
    config = make_config()
    client = AdminClient(url="http://127.0.0.1:9", token="t")
    view = LabView(config, client, LabState())  # not started: its snapshot stays empty
    served = await serve_view(config, view, tcp_sockets("127.0.0.1", 0))
    port = served.listener.addresses[0][1]  # type: ignore[index]
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/") as page:
                assert page.status == 200 and page.content_type == "text/html"
                assert "script-src 'self'" in page.headers["Content-Security-Policy"]
                assert page.headers["X-Content-Type-Options"] == "nosniff"
                assert '<script src="/static/lab.js"' in await page.text()
            async with session.get(f"{base}/api/lab") as lab:
                assert json.loads(await lab.text()) == {}
            async with session.get(f"{base}/static/..%2fapp.py") as escape:
                assert escape.status == 404
            rebound = {"Host": f"attacker.example:{port}"}
            async with session.get(f"{base}/api/lab", headers=rebound) as refused:
                assert refused.status == 421
            async with session.get(f"{base}/api/instances/nope/documents") as missing:
                assert missing.status == 404
                assert (await missing.json())["error"]["message"] == "no lab instance nope"
    finally:
        await served.close()
        await client.close()


async def test_event_stream_sends_snapshots_and_ends_with_the_page(
    make_config: Callable[..., Config],
) -> None:
    """Each change of the inventory is a new ``event: lab``; closing the page ends a stream
    that is still open (as ``lab up``'s teardown does with a browser attached)."""
    config = make_config()
    async with running_admin(config) as (_, client):
        page = await start_page(config, client, LabState(), 0)
        closed = False
        try:
            async with aiohttp.ClientSession() as session:
                stream = await session.get(f"{page.url}api/events")
                assert stream.headers["Content-Type"].startswith("text/event-stream")
                first = await _event(stream.content)
                assert first["networks"] == []
                await client.create_network("cmt-seen-live")
                while not (found := await _event(stream.content))["networks"]:
                    pass  # a scrape or a rebuild without the network yet
                assert [n["name"] for n in found["networks"]] == ["cmt-seen-live"]
                async with asyncio.timeout(5):
                    await page.close()
                    closed = True
                    await stream.content.read()  # the end of a complete response, no hang
                stream.release()
        finally:
            if not closed:
                await page.close()


async def _event(content: aiohttp.StreamReader) -> dict[str, object]:
    """The data of the next ``event: lab`` of a server-sent event stream."""
    event, data = "", []
    async with asyncio.timeout(10):
        while True:
            line = (await content.readline()).decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data.append(line.partition(":")[2].strip())
            elif not line and data:
                if event == "lab":
                    found: dict[str, object] = json.loads("\n".join(data))
                    return found
                event, data = "", []


def _inst(name: str, network: str) -> LabInstance:
    return LabInstance(
        name=name,
        server_id=f"srv-{name}",
        network_id=network,
        network=network,
        namespace=f"cmt-vm-{name}",
        link=f"cmt-l-{name}",
        port_id=f"port-{name}",
    )


def _change(kind: str, id_: str, **touches: list[str]) -> Change:
    return {"revision": 1, "kind": kind, "id": id_, "op": "update", "touches": touches}


def test_stale_rows_are_those_a_change_can_alter() -> None:
    lab = [_inst("a", "net-1"), _inst("b", "net-1"), _inst("c", "net-2")]
    assert stale_rows(ChangeBatch(1, resync=True), lab) is None
    assert stale_rows(ChangeBatch(1, [_change("router", "r")]), lab) is None
    assert stale_rows(ChangeBatch(1, [_change("subnet", "s", network_ids=["net-2"])]), lab) is None
    old: Change = {"revision": 1, "kind": "port", "id": "p", "op": "update"}  # no touches
    assert stale_rows(ChangeBatch(1, [old]), lab) is None
    own = _change("server", "srv-c", port_ids=["port-c"], network_ids=[])
    assert stale_rows(ChangeBatch(1, [own]), lab) == {"c"}
    dhcp = _change("port", "dhcp-port", network_ids=["net-1"], device_owners=["network:dhcp"])
    assert stale_rows(ChangeBatch(1, [dhcp, own]), lab) == {"a", "b", "c"}
    elsewhere = _change("network", "net-9", network_ids=["net-9"])
    assert stale_rows(ChangeBatch(1, [elsewhere]), lab) == set()


async def test_a_failed_view_task_runs_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(live, "RESTART_DELAY", 0.0)
    runs: list[int] = []
    done = asyncio.Event()

    async def body() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("a bug in the view")
        done.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(live._kept(body))
    async with asyncio.timeout(5):
        await done.wait()
    task.cancel()
    assert runs == [0, 1]
