"""Header rules shared by the proxy modes, and the haproxy config that encodes them."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

import pytest

from cloudmeta.config import Config, ProxyMode
from cloudmeta.http import Limits
from cloudmeta.proxy import MetadataProxyManager
from cloudmeta.proxy.binds import Bind, parse_bind
from cloudmeta.proxy.haproxy import render_config, same_config
from cloudmeta.proxy.headers import ProxyTarget, clean_headers, is_forbidden_token_put
from cloudmeta.proxy.process import LIMIT_OPTIONS, limits_from

SPOOFED = [
    ("X-Neutron-Network-ID", "other-net"),
    ("x-neutron-router-id", "other-router"),
    ("X-NEUTRON-ANYTHING", "x"),
    ("X-Instance-ID", "victim"),
    ("x-instance-id-signature", "0" * 64),
    ("X-Tenant-ID", "victim-project"),
    ("X-Forwarded-For", "192.0.2.99"),
    ("x-forwarded-for", "192.0.2.98"),
    ("Host", "169.254.169.254"),
    ("Connection", "keep-alive"),
]


def test_clean_headers_strips_claims_and_replaces_forwarded_for() -> None:
    headers = [*SPOOFED, ("Accept", "application/json"), ("X-aws-ec2-metadata-token", "t")]
    out = clean_headers(headers, "192.0.2.5", ProxyTarget(network_id="net-a"))
    assert out.getall("X-Forwarded-For") == ["192.0.2.5"]
    assert out.getall("X-Neutron-Network-ID") == ["net-a"]
    assert "X-Neutron-Router-ID" not in out
    assert "X-Instance-ID" not in out and "X-Instance-ID-Signature" not in out
    assert "X-Tenant-ID" not in out and "X-Neutron-Anything" not in out
    assert out["Accept"] == "application/json"
    assert out["X-aws-ec2-metadata-token"] == "t"


def test_router_target_sets_router_header_only() -> None:
    out = clean_headers(SPOOFED, "192.0.2.5", ProxyTarget(router_id="r-1"))
    assert out.getall("X-Neutron-Router-ID") == ["r-1"]
    assert "X-Neutron-Network-ID" not in out


def test_target_needs_exactly_one_id() -> None:
    with pytest.raises(ValueError):
        ProxyTarget()
    with pytest.raises(ValueError):
        ProxyTarget(network_id="n", router_id="r")


@pytest.mark.parametrize(
    ("method", "path", "headers", "forbidden"),
    [
        ("PUT", "/latest/api/token", [("X-Forwarded-For", "192.0.2.1")], True),
        ("put", "//latest/api/token/", [("x-forwarded-for", "192.0.2.1")], True),
        ("PUT", "/latest/./api/token?x=1", [("X-FORWARDED-FOR", "1")], True),
        # Every spelling the metadata API routes to its token handler (issue 4 review).
        ("PUT", "/ec2/latest/api/token", [("X-Forwarded-For", "192.0.2.1")], True),
        ("PUT", "//ec2//latest/api/./token", [("X-Forwarded-For", "192.0.2.1")], True),
        ("PUT", "/latest/meta-data/../api/token", [("X-Forwarded-For", "192.0.2.1")], True),
        ("PUT", "/latest/api/x/../token", [("X-Forwarded-For", "192.0.2.1")], True),
        ("PUT", "/openstack/latest/api/token", [("X-Forwarded-For", "192.0.2.1")], False),
        ("PUT", "/latest/api/token", [], False),
        ("GET", "/latest/api/token", [("X-Forwarded-For", "192.0.2.1")], False),
        ("PUT", "/latest/meta-data/", [("X-Forwarded-For", "192.0.2.1")], False),
    ],
)
def test_token_put_guard(
    method: str, path: str, headers: list[tuple[str, str]], forbidden: bool
) -> None:
    assert is_forbidden_token_put(method, path, headers) is forbidden


@pytest.mark.parametrize(
    ("text", "bind"),
    [
        ("169.254.169.254:80", Bind("169.254.169.254", 80)),
        ("0.0.0.0:9697", Bind("0.0.0.0", 9697)),
        ("[fe80::a9fe:a9fe%cmt-ns1]:80", Bind("fe80::a9fe:a9fe", 80, "cmt-ns1")),
        ("[::]:9697", Bind("::", 9697)),
    ],
)
def test_parse_bind(text: str, bind: Bind) -> None:
    assert parse_bind(text) == bind
    assert str(parse_bind(text)) == text


@pytest.mark.parametrize("bad", ["169.254.169.254", "host:80", "1.2.3.4:0", "[fe80::1]:x"])
def test_parse_bind_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_bind(bad)


def _config(tmp_path: Path, target: ProxyTarget) -> str:
    binds = [parse_bind("169.254.169.254:80"), parse_bind("[fe80::a9fe:a9fe%lo]:80")]
    return render_config(
        target, binds, tmp_path / "metadata_proxy", tmp_path / "p.pid", user="root", group="root"
    )


def test_haproxy_config_is_neutrons_plus_replacing_forwarded_for(tmp_path: Path) -> None:
    text = _config(tmp_path, ProxyTarget(network_id="net-a"))
    lines = [line.strip() for line in text.splitlines()]
    for expected in (
        "maxconn 1024",
        "option forwardfor",
        "option http-server-close",
        "timeout http-request 30s",
        "listen listener",
        "bind 169.254.169.254:80",
        "bind [fe80::a9fe:a9fe]:80 interface lo",
        "http-request set-header X-Neutron-Network-ID net-a",
        f"server metadata {tmp_path / 'metadata_proxy'}",
        f"pidfile {tmp_path / 'p.pid'}",
    ):
        assert expected in lines
    # Deleting the caller's X-Forwarded-For (after the token rule saw it) is what makes
    # option forwardfor replace rather than append.
    # Any PUT carrying X-Forwarded-For: the API takes PUT only on its token path, whatever
    # spelling (/ec2/..., dot segments, %2e) reaches it.
    deny = lines.index("http-request deny deny_status 403 if token_put has_xff")
    assert deny < lines.index("http-request del-header X-Forwarded-For")
    assert same_config(text, text.replace("p.pid", "other.pid"))
    assert not same_config(text, _config(tmp_path, ProxyTarget(router_id="net-a")))


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_the_config(tmp_path: Path) -> None:
    path = tmp_path / "cmt.conf"
    path.write_text(_config(tmp_path, ProxyTarget(router_id="r-1")))
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_proxy_mode_takes_the_configured_limits(
    tmp_path: Path, make_config: Callable[..., Config]
) -> None:
    """haproxy's ``timeout http-keep-alive`` and a proxy process's options are the config's,
    so every listener of a namespace closes idle connections after the same time."""
    config = make_config(
        metadata_proxy_keepalive_timeout=2.5,
        metadata_proxy_header_timeout=4.0,
        metadata_proxy_max_connections=7,
        metadata_proxy_max_connections_per_peer=3,
    )
    target = ProxyTarget(network_id="net-a")
    binds = (parse_bind("169.254.169.254:80"),)
    pidfile = tmp_path / "p.pid"
    haproxy = MetadataProxyManager(
        config.model_copy(update={"metadata_proxy_mode": ProxyMode.HAPROXY})
    )
    _, _, text = haproxy._command(target, binds, pidfile)
    assert "timeout http-keep-alive 2500ms" in [line.strip() for line in text.splitlines()]
    process = MetadataProxyManager(
        config.model_copy(update={"metadata_proxy_mode": ProxyMode.PROCESS})
    )
    argv, _, _ = process._command(target, binds, pidfile)
    parsed = {flag: value for flag, value in pairwise(argv) if flag[:2] == "--"}
    options = {opt: parsed[opt] for opt, _, _ in LIMIT_OPTIONS}
    limits = limits_from(
        {name: kind(options[opt]) for opt, name, kind in LIMIT_OPTIONS}  # as the process parses
    )
    assert limits == Limits.from_config(config)
    assert limits_from(dict.fromkeys(["header_timeout"])) == Limits(max_connections=1024)
