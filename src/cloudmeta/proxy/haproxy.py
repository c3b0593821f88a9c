"""``haproxy`` mode: Neutron's generated haproxy config (CONTRACTS 3a/3b), pure rendering.

Differences from Neutron, each closing a hole: ``X-Forwarded-For`` is deleted before
``option forwardfor`` adds the real peer (Neutron appends to the caller's copy), every
``X-Neutron-*``/``X-Instance-ID*``/``X-Tenant-ID`` is deleted (Neutron deletes only the other
id header), and any PUT already carrying ``X-Forwarded-For`` is denied with 403: the metadata
API accepts PUT only on its token path, and matching that path here would have to repeat the
API's normalisation (``/ec2/latest/api/token``, dot segments, ``%2e``) in regex.

``[metadata_rate_limiting]`` renders as Neutron's two stick-tables (``http_req_rate`` over the
base and burst windows, per source address) and its ``deny_status 429`` rules, plus a
``Retry-After`` (the violated window) and ``ip_versions`` as an ACL on the source's family:
Neutron takes one version only and limits every source its table type can hold.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudmeta.config import MetadataRateLimitingSection
from cloudmeta.http.longpoll import MAX_TIMEOUT_SEC
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.headers import ProxyTarget

__all__ = ["HaproxyTimeouts", "config_dir", "render_config", "same_config"]

MAXCONN = 1024


@dataclass(frozen=True, slots=True)
class HaproxyTimeouts:
    """Neutron's ``[metadata_haproxy]`` defaults, in seconds."""

    http_request: int = 30
    connect: int = 30
    client: int = 32
    server: int = 32
    http_keep_alive: float = 30  # metadata_proxy_keepalive_timeout


def _duration(seconds: float) -> str:
    """A haproxy time: whole seconds as ``30s``, anything finer in milliseconds."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{round(seconds * 1000)}ms"


def config_dir(state_path: Path) -> Path:
    return state_path / "ns-metadata-proxy"


def _bind_line(bind: Bind) -> str:
    if bind.is_v6:
        iface = f" interface {bind.interface}" if bind.interface else ""
        return f"    bind [{bind.host}]:{bind.port}{iface}"
    return f"    bind {bind.host}:{bind.port}"


def render_config(
    target: ProxyTarget,
    binds: Sequence[Bind],
    agent_socket: Path,
    pidfile: Path,
    *,
    debug: bool = False,
    user: str | None = None,
    group: str | None = None,
    timeouts: HaproxyTimeouts | None = None,
    rate_limit: MetadataRateLimitingSection | None = None,
) -> str:
    """The whole haproxy.cfg for one network or router namespace."""
    tables, rules = (
        _rate_limit_lines(rate_limit)
        if rate_limit is not None and rate_limit.rate_limit_enabled
        else ([], [])
    )
    t = timeouts or HaproxyTimeouts()
    header, value = target.header
    log_tag = f"haproxy-metadata-proxy-{target.uuid}"
    user = user or pwd.getpwuid(os.geteuid()).pw_name
    group = group or grp.getgrgid(os.getegid()).gr_name
    lines = [
        "global",
        f"    log /dev/log local0 {'debug' if debug else 'info'}",
        f"    log-tag {log_tag}",
        f"    user {user}",
        f"    group {group}",
        f"    maxconn {MAXCONN}",
        "    nbthread 2",
        f"    pidfile {pidfile}",
        "    daemon",
        "",
        "defaults",
        "    log global",
        "    mode http",
        "    option httplog",
        "    option dontlognull",
        "    option http-server-close",
        "    option forwardfor",
        "    retries 3",
        f"    timeout http-request {t.http_request}s",
        f"    timeout connect {t.connect}s",
        f"    timeout client {t.client}s",
        f"    timeout server {t.server}s",
        f"    timeout http-keep-alive {_duration(t.http_keep_alive)}",
        "",
        *tables,
        "listen listener",
        *(_bind_line(b) for b in binds),
        *rules,
        # The token PUT rule must see the caller's own X-Forwarded-For, so it comes first.
        "    acl token_put method PUT",
        "    acl has_xff req.hdr_cnt(X-Forwarded-For) gt 0",
        "    http-request deny deny_status 403 if token_put has_xff",
        "    http-request del-header X-Forwarded-For",
        r"    http-request del-header (?i)^x-neutron-.* -m reg",
        r"    http-request del-header (?i)^x-instance-id.* -m reg",
        "    http-request del-header X-Tenant-ID",
        f"    http-request set-header {header} {value}",
        # A change long-poll answers up to MAX_TIMEOUT_SEC late (cloudmeta.http.longpoll).
        f"    http-request set-timeout server {t.server + MAX_TIMEOUT_SEC}s"
        " if { url_param(wait_for_change) -m str -i true }",
        f"    server metadata {agent_socket}",
        "",
    ]
    return "\n".join(lines)


_BASE_TABLE, _BURST_TABLE = "base_rate_limiter", "burst_rate_limiter"


def _rate_limit_lines(options: MetadataRateLimitingSection) -> tuple[list[str], list[str]]:
    """Neutron's stick-table backends and the listener's track/deny rules.

    A ``type ipv6`` table holds IPv4 sources too (as ``::ffff:a.b.c.d``), so both versions
    share it; one version only tracks the sources of that family. The ACL is an IPv6 pattern:
    haproxy matches an IPv4 source against it as ``::ffff:a.b.c.d``, so it holds IPv4 and
    v4-mapped sources (the agent's limiter counts those as IPv4 too) and nothing else, where
    ``src 0.0.0.0/0`` would also take ``::1``, ``::a.b.c.d`` and 6to4 ``2002:...`` sources.
    """
    versions = set(options.ip_versions)
    kind = "ip" if versions == {4} else "ipv6"
    expire = max(options.base_window_duration, options.burst_window_duration)
    tables: list[str] = []
    for table, window in (
        (_BASE_TABLE, options.base_window_duration),
        (_BURST_TABLE, options.burst_window_duration),
    ):
        tables += [
            f"backend {table}",
            f"    stick-table type {kind} size 10k expire {expire}s store http_req_rate({window}s)",
            "",
        ]
    rules: list[str] = []
    when = ""
    if versions != {4, 6}:
        rules.append("    acl src_ipv4 src ::ffff:0.0.0.0/96")
        when = " if src_ipv4" if versions == {4} else " if !src_ipv4"
    rules += [
        f"    http-request track-sc0 src table {_BASE_TABLE}{when}",
        f"    http-request track-sc1 src table {_BURST_TABLE}{when}",
    ]
    for table, window, limit in (
        (_BASE_TABLE, options.base_window_duration, options.base_query_rate_limit),
        (_BURST_TABLE, options.burst_window_duration, options.burst_query_rate_limit),
    ):
        rules.append(
            f"    http-request deny deny_status 429 hdr Retry-After {window}"
            f" if {{ src_http_req_rate({table}) gt {limit} }}"
        )
    return tables, rules


_PIDFILE = re.compile(r"^\s*pidfile .*$", re.M)


def same_config(old: str, new: str) -> bool:
    """Neutron compares configs ignoring the pidfile line; a difference means respawn."""
    return _PIDFILE.sub("", old) == _PIDFILE.sub("", new)
