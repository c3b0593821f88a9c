"""``[metadata_rate_limiting]`` in the generated haproxy config: Neutron's stick-tables and 429
rules, against a golden file, accepted by the real haproxy for every ``ip_versions``, and
enforced by it on loopback for IPv4 and IPv6 callers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cloudmeta.config import Config, MetadataRateLimitingSection, ProxyMode
from cloudmeta.proxy import MetadataProxyManager
from cloudmeta.proxy.binds import Bind, parse_bind
from cloudmeta.proxy.haproxy import render_config
from cloudmeta.proxy.headers import ProxyTarget

GOLDEN = Path(__file__).parent / "golden"
BINDS = (parse_bind("169.254.169.254:80"), parse_bind("[fe80::a9fe:a9fe%lo]:80"))
LIMITED = MetadataRateLimitingSection(
    rate_limit_enabled=True,
    base_window_duration=60,
    base_query_rate_limit=30,
    burst_window_duration=5,
    burst_query_rate_limit=10,
)


def _render(rate_limit: MetadataRateLimitingSection | None) -> str:
    return render_config(
        ProxyTarget(network_id="net-a"),
        BINDS,
        Path("/var/lib/cloudmeta/metadata_proxy"),
        Path("/var/lib/cloudmeta/external/pids/net-a.pid"),
        user="root",
        group="root",
        rate_limit=rate_limit,
    )


def test_rate_limited_config_is_the_golden_one() -> None:
    """Neutron's RATE_LIMITED_CONFIG_TEMPLATE (IPv4 only, its default), then our rules."""
    assert _render(LIMITED) == (GOLDEN / "haproxy-rate-limited.cfg").read_text()


@pytest.mark.parametrize(
    ("versions", "table", "condition"),
    [([4], "ip", " if src_ipv4"), ([6], "ipv6", " if !src_ipv4"), ([4, 6], "ipv6", "")],
)
def test_ip_versions_choose_the_table_and_the_tracked_sources(
    versions: list[int], table: str, condition: str, tmp_path: Path
) -> None:
    options = LIMITED.model_copy(update={"ip_versions": versions})
    text = _render(options)
    lines = [line.strip() for line in text.splitlines()]
    assert "stick-table type " + table + " size 10k expire 60s store http_req_rate(60s)" in lines
    assert "stick-table type " + table + " size 10k expire 60s store http_req_rate(5s)" in lines
    assert f"http-request track-sc0 src table base_rate_limiter{condition}" in lines
    assert f"http-request track-sc1 src table burst_rate_limiter{condition}" in lines
    assert ("acl src_ipv4 src ::ffff:0.0.0.0/96" in lines) is bool(condition)
    if shutil.which("haproxy") is not None:
        path = tmp_path / "cmt.conf"
        path.write_text(text)
        result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr


def test_disabled_renders_no_rate_limit() -> None:
    plain = _render(None)
    assert _render(MetadataRateLimitingSection()) == plain
    assert "stick-table" not in plain and "429" not in plain


def test_the_manager_renders_the_configs_options(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    config = make_config(
        metadata_proxy_mode=ProxyMode.HAPROXY,
        metadata_rate_limiting={"rate_limit_enabled": True, "burst_query_rate_limit": 4},
    )
    manager = MetadataProxyManager(config)
    _, _, text = manager._command(ProxyTarget(router_id="r-1"), BINDS[:1], tmp_path / "p.pid")
    lines = [line.strip() for line in text.splitlines()]
    assert (
        "http-request deny deny_status 429 hdr Retry-After 10"
        " if { src_http_req_rate(burst_rate_limiter) gt 4 }"
    ) in lines


async def _haproxy_on_loopback(
    tmp_path: Path, options: MetadataRateLimitingSection
) -> AsyncIterator[int]:
    """A real haproxy with the rendered config on 127.0.0.1 and [::1], in front of a unix
    socket that answers 200 (the agent's place): the rules alone decide the 429s."""
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]

    async def ok(_: web.BaseRequest) -> web.StreamResponse:
        return web.Response(text="ok")

    runner = web.ServerRunner(web.Server(ok))
    await runner.setup()
    agent_socket = tmp_path / "agent.sock"
    await web.UnixSite(runner, str(agent_socket)).start()
    conf = tmp_path / "cmt-haproxy.conf"
    conf.write_text(
        render_config(
            ProxyTarget(network_id="net-a"),
            (Bind("127.0.0.1", port), Bind("::1", port)),
            agent_socket,
            tmp_path / "haproxy.pid",
            rate_limit=options,
        )
    )
    process = await asyncio.create_subprocess_exec(
        "haproxy", "-db", "-f", str(conf), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        async with asyncio.timeout(10):  # a liveness bound: haproxy starts in ms
            while True:  # listening: a connection, no request (that would count)
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                await writer.wait_closed()
                break
        yield port
    finally:
        process.terminate()
        await process.wait()
        await runner.cleanup()


async def _statuses(host: str, port: int, count: int) -> tuple[list[int], set[str]]:
    statuses, retry_after = [], set()
    async with aiohttp.ClientSession() as session:
        for _ in range(count):
            async with session.get(f"http://{host}:{port}/latest/meta-data/") as response:
                statuses.append(response.status)
                retry_after.add(response.headers.get("Retry-After", ""))
    return statuses, retry_after


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
@pytest.mark.parametrize("versions", [[4], [6], [4, 6]], ids=str)
async def test_real_haproxy_limits_the_ip_versions_listed(
    tmp_path: Path, versions: list[int]
) -> None:
    """IPv4 and IPv6 callers (127.0.0.1, ::1), each limited only if its version is listed;
    the base window (3 in 60 s) binds first here and its 429s say ``Retry-After: 60``."""
    options = MetadataRateLimitingSection(
        rate_limit_enabled=True,
        ip_versions=versions,
        base_window_duration=60,
        base_query_rate_limit=3,
        burst_window_duration=10,
        burst_query_rate_limit=5,
    )
    async for port in _haproxy_on_loopback(tmp_path, options):
        for host, version in (("127.0.0.1", 4), ("[::1]", 6)):
            statuses, retry_after = await _statuses(host, port, 6)
            if version in versions:
                assert statuses == [200] * 3 + [429] * 3, (host, statuses)
                assert retry_after == {"", "60"}, retry_after
            else:
                assert statuses == [200] * 6, (host, statuses)
