"""The pure parts of the lab's IPv6: what cloud-init is told, the boot script per mode, the
CLI's refusal where IPv6 is not built (no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cloudmeta.cli.main import cli
from cloudmeta.lab.bootscript import boot_script
from cloudmeta.lab.cloudcfg import Datasource, lab_cloud_cfg, metadata_urls
from cloudmeta.lab.ipv6 import metadata_source, url_host

V6_URL = "http://[fe80::a9fe:a9fe%eth0]"


def test_cloud_init_is_told_to_ask_ipv6_first() -> None:
    assert metadata_urls(ipv4=True, ipv6=True) == [V6_URL, "http://169.254.169.254"]
    assert metadata_urls(ipv4=False, ipv6=True) == [V6_URL]
    assert metadata_urls() == ["http://169.254.169.254"]
    cfg = json.loads(lab_cloud_cfg(Datasource.OPENSTACK, metadata_urls(ipv4=False, ipv6=True)))
    assert cfg["datasource"]["OpenStack"]["metadata_urls"] == [V6_URL]


def test_boot_script_per_ipv6_mode() -> None:
    d = Path("/tmp/cmt-v6l-x")
    v4 = boot_script(d, "eth0")
    assert "dhclient -1" in v4 and "dhclient -6" not in v4 and "accept_ra" not in v4
    slaac = boot_script(d, "eth0", ipv4=False, ipv6_mode="slaac")
    assert "dhclient" not in slaac  # the kernel's SLAAC alone, and no IPv4 lease at all
    assert "/proc/sys/net/ipv6/conf/eth0/accept_ra" in slaac
    assert "scope global -tentative" in slaac
    stateful = boot_script(d, "eth0", ipv6_mode="dhcpv6-stateful")
    assert 'chroot "$R" dhclient -6 -1 -v -pf /run/dhclient6.pid' in stateful  # contained
    assert "scope link -tentative" in stateful  # after DAD of the link-local address
    stateless = boot_script(d, "eth0", ipv6_mode="dhcpv6-stateless")
    assert 'chroot "$R" dhclient -6 -S -1' in stateless


def test_metadata_source_and_url_host() -> None:
    log = "DataSourceOpenStack.py[DEBUG]: Using metadata source: 'http://[fe80::a9fe:a9fe%eth0]'\n"
    assert metadata_source(log) == V6_URL
    assert metadata_source("nothing here") is None
    assert url_host("2001:db8:3::5") == "[2001:db8:3::5]" and url_host("192.0.2.5") == "192.0.2.5"


def test_ipv6_is_refused_on_a_multi_node_lab(tmp_path: Path) -> None:
    env = {"CLOUDMETA_STATE_PATH": str(tmp_path)}
    result = CliRunner().invoke(
        cli, ["lab", "up", "--ipv6", "--compute-nodes", "1", "--once"], env=env
    )
    assert result.exit_code == 2 and "--ipv6 is for the one-host lab" in result.output
