"""IPv6 subnets in the lab, end to end: ``lab up --ipv6`` with its dual-stack and IPv6-only
networks, instances that take their IPv6 address from the real dnsmasq (SLAAC from its RAs,
DHCPv6 with Debian's dhclient -6), and cloud-init reading the metadata over fe80::a9fe:a9fe.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from labkit import assert_nothing_left
from labkit import cli as _cli

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.inventory.rules import eui64_address
from cloudmeta.lab import cloud, instance
from cloudmeta.lab.ipv6 import IPV6_ONLY, V6_SUBNETS
from cloudmeta.lab.state import LabState, load_state, save_state
from cloudmeta.linux import run

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

V6_URL = "http://[fe80::a9fe:a9fe%eth0]"
CIDRS = {name: v6.cidr for name, v6 in V6_SUBNETS.items()} | {IPV6_ONLY[0]: IPV6_ONLY[1].cidr}


def test_lab_up_ipv6_once(lab_config: Config) -> None:
    """Three instances over the three networks: each has its port's IPv6 address (EUI-64 by
    SLAAC, the pool's by DHCPv6-stateful), and cloud-init crawled its own instance over
    fe80::a9fe:a9fe, answered by the DHCP port (no router) or the router (routed)."""
    report = lab_config.state_path / "report.json"
    args = ["lab", "up", "--ipv6", "--once", "--instances", "3", "--no-web"]
    try:
        done = _cli(lab_config, *args, "--report", str(report), timeout=280)
        rows: list[dict[str, Any]] = json.loads(report.read_text()) if report.exists() else []
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert {r["network"] for r in rows} == set(CIDRS)
        for row in rows:
            assert row["result"] == "ok", row
            assert row["hostname"] == f"{row['name']}-lab", row
            assert row["package"] == "cmt-hello 1.0", row  # the repository, over IPv6 too
            assert row["errors"] == [], row  # it has its port's IPv6 address, among others
            # exactly its port's address: RA flags as the mode says (no A flag on the stateful
            # network, so no SLAAC address beside the DHCPv6 one)
            assert row["ip6"] is not None and row["ipv6_addresses"] == [row["ip6"]], row
            cidr = CIDRS[row["network"]]
            assert row["ip6"].startswith(cidr.split("::")[0] + ":"), row
            # cloud-init 22.4.2 settled on the IPv6 URL, first in its list
            assert row["metadata_url"] == V6_URL, row
            assert row["path6"] == ("router" if row["network"] == "routed" else "dhcp"), row
        by_net = {r["network"]: r for r in rows}
        only = by_net[IPV6_ONLY[0]]
        assert only["ip"] == only["ip6"] and only["metadata_next_hop"] is None, only
        assert "f816:3eff:fe" in only["ip6"] and "f816:3eff:fe" in by_net["routed"]["ip6"]
        assert "f816:3eff:fe" not in by_net["isolated"]["ip6"]  # DHCPv6-stateful: the pool
    finally:
        _cli(lab_config, "lab", "down", timeout=90)
    assert_nothing_left(lab_config)


@pytest.fixture
async def lab6(lab_config: Config) -> AsyncIterator[tuple[Config, AdminClient, LabState]]:
    state = LabState()
    save_state(lab_config, state)
    client = AdminClient(lab_config)
    try:
        await cloud.ensure_all_in_one(lab_config, client, state, lambda _: None)
        await cloud.build_cloud(lab_config, client, state, lambda _: None, ipv6=True)
        yield lab_config, client, state
    finally:
        await cloud.down(lab_config, load_state(lab_config) or state, client)
        await client.close()
    assert_nothing_left(lab_config)


async def _curl(config: Config, name: str, url: str) -> tuple[int, str]:
    argv = instance.exec_argv(
        cloud.instance_paths(config, name), ["curl", "-gfsS", "--max-time", "5", url]
    )
    done = await run(argv, timeout=15, check=False)
    return done.returncode, done.stdout


async def test_ipv6_only_instance_reads_its_own_metadata_as_cloud_init_24_does(
    lab6: tuple[Config, AdminClient, LabState],
) -> None:
    """cloud-init 24.2+'s request sequence with RFC 6874's ``%25`` (the form it builds), by
    curl in the IPv6-only instance: its own meta_data.json, and a network_data.json that
    lists its network as Nova's ``ipv6_slaac`` with the address SLAAC gave it."""
    config, client, state = lab6
    net = next(n for n in state.networks.values() if n.name == IPV6_ONLY[0])
    inst = await cloud.boot_instance(config, client, state, "v6l-1", net.id)
    assert await instance.wait_booted(cloud.instance_paths(config, "v6l-1"), 90) == "ok"
    base = "http://[fe80::a9fe:a9fe%25eth0]"
    code, versions = await _curl(config, "v6l-1", f"{base}/openstack")
    assert code == 0 and "latest" in versions.split()
    code, body = await _curl(config, "v6l-1", f"{base}/openstack/latest/meta_data.json")
    assert code == 0 and json.loads(body)["uuid"] == inst.server_id
    code, body = await _curl(config, "v6l-1", f"{base}/openstack/latest/network_data.json")
    assert code == 0
    networks = json.loads(body)["networks"]
    assert inst.mac is not None
    slaac = str(eui64_address(IPV6_ONLY[1].cidr, inst.mac))
    assert [(n["type"], n["ip_address"]) for n in networks] == [("ipv6_slaac", slaac)]
    assert inst.ip6 == slaac
    # No IPv4 at all: 169.254.169.254 is not reachable from it.
    code, _ = await _curl(config, "v6l-1", "http://169.254.169.254/openstack")
    assert code != 0
