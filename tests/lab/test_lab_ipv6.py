"""IPv6 subnets in the lab, end to end: ``lab up --ipv6`` with its dual-stack and IPv6-only
networks, instances that take their IPv6 address from the real dnsmasq (SLAAC from its RAs,
DHCPv6 with Debian's dhclient -6), and cloud-init reading the metadata over fe80::a9fe:a9fe.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from labkit import assert_nothing_left
from labkit import cli as _cli

from cloudmeta.config import Config
from cloudmeta.lab import cloud, instance
from cloudmeta.lab.cloudcfg import METADATA_URL_V6
from cloudmeta.lab.ipv6 import IPV6_ONLY, V6_SUBNETS
from cloudmeta.linux import run

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

_PREFIX = {"isolated": "2001:db8:1:", "routed": "2001:db8:2:", "ipv6-only": "2001:db8:3:"}


def _log(config: Config, name: str) -> str:
    path = cloud.instance_paths(config, name).upper / "var/log/cloud-init.log"
    return path.read_text() if path.exists() else ""


def test_lab_up_ipv6_once(lab_config: Config) -> None:
    """Three instances over the three networks: each has its port's IPv6 address, cloud-init
    crawled its own instance, the IPv6-only one over fe80::a9fe:a9fe, the others too, where
    the path answers; the table says which port answered fe80::a9fe:a9fe."""
    report = lab_config.state_path / "report.json"
    args = ["lab", "up", "--ipv6", "--once", "--instances", "3", "--no-web"]
    try:
        done = _cli(lab_config, *args, "--report", str(report), timeout=280)
        rows: list[dict[str, Any]] = json.loads(report.read_text()) if report.exists() else []
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert {r["network"] for r in rows} == {"isolated", "routed", "ipv6-only"}
        for row in rows:
            assert row["result"] == "ok", row
            assert row["hostname"] == f"{row['name']}-lab", row
            assert row["package"] == "cmt-hello 1.0", row  # the repository over IPv6 too
            assert row["ip6"] is not None and row["ip6"].startswith(_PREFIX[row["network"]]), row
            assert row["errors"] == [], row
        only = next(r for r in rows if r["network"] == IPV6_ONLY[0])
        assert only["ip"] == only["ip6"] and only["metadata_next_hop"] is None
        assert only["path6"] == "dhcp", only  # no router on it: its DHCP port answered
        # SLAAC gives the EUI-64 address the inventory gave the port; DHCPv6 the pool's one.
        stateful = next(r for r in rows if r["network"] == "isolated")
        assert V6_SUBNETS["isolated"].mode == "dhcpv6-stateful"
        assert stateful["ip6"] == "2001:db8:1::2" or "ff:fe" not in stateful["ip6"], stateful
        assert "ff:fe" in only["ip6"] or "fffe" in only["ip6"].replace(":", ""), only
    finally:
        _cli(lab_config, "lab", "down", timeout=90)
    assert_nothing_left(lab_config)


def test_cloud_init_config_asks_ipv6_first(lab_config: Config) -> None:
    """What the instance's cloud-init is told: fe80::a9fe:a9fe%eth0 first (IPv6-only: only)."""
    from cloudmeta.lab.cloudcfg import Datasource, lab_cloud_cfg, metadata_urls

    v6 = METADATA_URL_V6.format(iface="eth0")
    assert metadata_urls(ipv4=True, ipv6=True) == [v6, "http://169.254.169.254"]
    assert metadata_urls(ipv4=False, ipv6=True) == [v6]
    assert metadata_urls() == ["http://169.254.169.254"]
    cfg = json.loads(lab_cloud_cfg(Datasource.OPENSTACK, metadata_urls(ipv4=False, ipv6=True)))
    assert cfg["datasource"]["OpenStack"]["metadata_urls"] == ["http://[fe80::a9fe:a9fe%eth0]"]


async def _curl_v6(config: Config, name: str, path: str) -> tuple[int, str]:
    argv = instance.exec_argv(
        cloud.instance_paths(config, name),
        ["curl", "-gsS", "--max-time", "5", f"http://[fe80::a9fe:a9fe%25eth0]{path}"],
    )
    done = await run(argv, timeout=15, check=False)
    return done.returncode, done.stdout
