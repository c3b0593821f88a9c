"""``[metadata_rate_limiting]`` in the generated haproxy config: Neutron's stick-tables and 429
rules, against a golden file, and accepted by the real haproxy for every ``ip_versions``."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from cloudmeta.config import Config, MetadataRateLimitingSection, ProxyMode
from cloudmeta.proxy import MetadataProxyManager
from cloudmeta.proxy.binds import parse_bind
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
    assert ("acl src_ipv4 src 0.0.0.0/0" in lines) is bool(condition)
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
