"""The multi-node lab end to end (issue 14): a controller with two API hosts on PostgreSQL, two
network nodes, two compute nodes, tenant networks over VXLAN, four instances booting real
dhclient and cloud-init; then one network node dies while every instance reads its
``meta_data.json`` in a loop, and metadata must not notice (localports on the compute nodes;
:mod:`cloudmeta.lab.nodes.failover` measures it, as the ``node-loss`` bench does).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from labkit import CLI, assert_nothing_left
from labkit import cli as _cli

from cloudmeta.config import Config
from cloudmeta.lab.childenv import config_env
from cloudmeta.lab.nodes.failover import node_loss
from cloudmeta.lab.nodes.topology import database_name, node_fabric, vni_of, vxlan_link
from cloudmeta.lab.state import LabState, load_state
from cloudmeta.linux import list_ebtables, list_links, list_namespaces
from cloudmeta.linux.vxlan import flood_peers

pytestmark = [pytest.mark.root, pytest.mark.postgres, pytest.mark.timeout(300)]

NODES = ("network-1", "network-2", "compute-1", "compute-2")
_META = "http://169.254.169.254/openstack/latest/meta_data.json"
FAILOVER_BOUND = 5.0  # seconds after the node's loss from which every request must succeed


@dataclass
class Lab:
    config: Config
    up: subprocess.Popen[str]
    output: Path

    def state(self) -> LabState:
        found = load_state(self.config)
        assert found is not None
        return found


def _env(config: Config) -> dict[str, str]:
    return {**os.environ, **config_env(config)}


@pytest.fixture
def lab(lab_config: Config) -> Iterator[Lab]:
    """``lab up --network-nodes 2 --compute-nodes 2 --instances 4`` running in the background
    until its table is printed; ``lab down`` afterwards, which must leave nothing."""
    output = lab_config.state_path / "lab-up.out"
    args = ["lab", "up", "--network-nodes", "2", "--compute-nodes", "2", "--instances", "4"]
    with output.open("w") as out:
        up = subprocess.Popen(
            [*CLI, *args, "--no-web"], env=_env(lab_config), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 180
        while "Ctrl-C tears it down" not in output.read_text():
            assert up.poll() is None, output.read_text()[-4000:]
            assert time.monotonic() < deadline, output.read_text()[-4000:]
            time.sleep(0.5)
        yield Lab(lab_config, up, output)
    finally:
        down = _cli(lab_config, "lab", "down", timeout=120)
        up.wait(timeout=60)
        assert down.returncode == 0, down.stdout + down.stderr
    assert_nothing_left(lab_config)
    assert not list_namespaces(lab_config.namespace_prefix)


def _status(config: Config) -> list[dict[str, Any]]:
    done = _cli(config, "lab", "status", "-f", "json", timeout=60)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout))


async def _databases() -> list[str]:
    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres", timeout=5)
    try:
        return [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")]
    finally:
        await conn.close()


async def test_multinode_lab_boots_four_instances_and_survives_a_network_node(lab: Lab) -> None:
    config, state = lab.config, lab.state()
    rows = _status(config)
    assert len(rows) == 4
    for row in rows:
        assert row["result"] == "ok", (row, lab.output.read_text()[-3000:])
        assert row["hostname"] == f"{row['name']}-lab"
        assert row["password_set"] is True and row["package"] == "cmt-hello 1.0"
        assert (row["metadata_next_hop"], row["path"]) == ("on-link", "localport"), row
    # Both compute nodes, both networks on each (one network behind the router).
    placed = {(r["host"], r["network"]) for r in rows}
    assert placed == {(h, n) for h in ("compute-1", "compute-2") for n in ("isolated", "routed")}

    # The controller: a private database, two API hosts on their loopback addresses.
    assert database_name(config) in await _databases()
    assert set(state.nodes["controller"].services) == {"api-1", "api-2"}
    # Every network: a VXLAN device with its VNI on every node, flooding to the three others.
    underlay = {n: state.nodes[n].underlay_ip for n in NODES}
    for network_id in state.networks:
        for node in NODES:
            fabric = node_fabric(config, node)
            links = {link.name: link for link in await list_links(fabric)}
            assert vxlan_link(config, network_id) in links, (node, sorted(links))
            peers = await flood_peers(fabric, vxlan_link(config, network_id))
            assert peers == {ip for n, ip in underlay.items() if n != node}
        assert vni_of(network_id) > 0
        # Two DHCP agents per network: one DHCP namespace on each network node.
        for node in ("network-1", "network-2"):
            assert f"{config.namespace_prefix}{node}-qdhcp-{network_id}" in list_namespaces()

    # `lab boot --host`: one more instance, placed where asked; a network node is refused.
    booted = _cli(config, "lab", "boot", "extra-1", "--network", "routed", "--host", "compute-2")
    assert booted.returncode == 0, booted.stdout[-2000:] + booted.stderr[-2000:]
    extra = next(r for r in _status(config) if r["name"] == "extra-1")
    assert (extra["host"], extra["result"], extra["path"]) == ("compute-2", "ok", "localport")
    refused = _cli(config, "lab", "boot", "extra-2", "--network", "routed", "--host", "network-2")
    assert refused.returncode != 0 and "not a live compute node" in refused.stderr
    state = lab.state()
    rows = _status(config)

    # Each compute node: its localports' isolation, its instance ports' anti-spoofing.
    for host in ("compute-1", "compute-2"):
        fabric = node_fabric(config, host)
        assert "--arp-ip-dst 169.254.169.254 -j DROP" in await list_ebtables(fabric, "filter")
        nat = await list_ebtables(fabric, "nat")
        for inst in state.instances.values():  # rendered for every port of the network
            assert f"-i {inst.link} -j cm-{inst.link}" in nat, nat

    # Every instance reads meta_data.json in a loop; network-1 (DHCP + L3 agent) dies.
    result = await node_loss(config, state, "network-1", seconds=14.0, kill_after=4.0)
    assert not list_namespaces(f"{config.namespace_prefix}network-1-")
    assert set(result.requests) == {r["name"] for r in rows}
    assert min(result.requests.values()) > 20, result
    assert result.wrong == 0, result  # each instance sees only its own document, always
    assert result.late == [], result  # every request from FAILOVER_BOUND s on succeeds
    print(f"\nnode-loss failover: {result.failover_seconds:.2f} s ({result.failures} failed)")
    assert result.failover_seconds <= FAILOVER_BOUND
    # The lab did not restart the lost node's agents.
    assert "with its node; not restarting it" in lab.output.read_text()

    # The localport trusts the source address: an instance taking another one's address (on
    # the same network, another compute node) gets nothing, its frames dropped at its port.
    me = next(r for r in rows if r["host"] == "compute-1" and r["network"] == "isolated")
    victim = next(r for r in rows if r["host"] == "compute-2" and r["network"] == "isolated")
    spoof = (
        f"ip address add {victim['ip']}/32 dev eth0 && "
        f"curl -s -m 3 --interface {victim['ip']} {_META}; echo rc=$?"
    )
    done = _cli(config, "lab", "exec", me["name"], "--", "sh", "-c", spoof, timeout=60)
    assert "rc=0" not in done.stdout and victim["server_id"] not in done.stdout, done.stdout
