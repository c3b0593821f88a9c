"""The lab at a little scale: 50 networks made beside a running lab (as with ``cloudmeta network
create`` + ``subnet create``), an instance booted on the newest, then ``lab down``.

``lab down`` must leave nothing of what the lab's all-in-one made, whoever created the network:
no ``qdhcp-``/``qrouter-`` namespace of the lab's prefix, no dnsmasq, and no ``lab up`` either.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest
from labkit import CLI, assert_nothing_left, cli, processes_of

from cloudmeta import linux
from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.lab import cloud
from cloudmeta.lab.childenv import config_env
from cloudmeta.lab.state import LabState
from cloudmeta.linux.names import bridge_name

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

EXTRA_NETWORKS = 50
CIDR = "203.0.113.0/24"  # the same range on every network: overlapping IPs are normal
_READY = "up; Ctrl-C tears it down"


def _lab_up(config: Config) -> subprocess.Popen[str]:
    """``lab up --instances 1`` in the background, once it printed that it is up."""
    env = {**os.environ, **config_env(config)}
    proc = subprocess.Popen(
        [*CLI, "lab", "up", "--instances", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:  # ends at EOF if lab up dies
        seen.append(line)
        if _READY in line:
            return proc
    proc.wait()
    raise AssertionError("lab up ended before it was up:\n" + "".join(seen[-40:]))


async def _make_networks(config: Config, count: int) -> list[str]:
    """``count`` networks with a subnet each, made in parallel; their ids, newest last."""
    async with AdminClient(config) as client:
        gate = asyncio.Semaphore(8)

        async def one(i: int) -> str:
            async with gate:
                network = await client.create_network(f"cmt-scale-{i}")
                await client.create_subnet(network["id"], CIDR, name=f"cmt-scale-{i}-subnet")
                return str(network["id"])

        ids = await asyncio.gather(*(one(i) for i in range(count - 1)))
        return [*ids, await one(count - 1)]  # the newest: made after all the others


def _wait_served(config: Config, network_ids: list[str], timeout: float = 90.0) -> None:
    """Until the lab's DHCP agent serves every one of ``network_ids`` (a dnsmasq each)."""
    wanted = {f"{config.namespace_prefix}qdhcp-{n}" for n in network_ids}
    deadline = time.monotonic() + timeout
    while True:
        missing = wanted - set(linux.list_namespaces(f"{config.namespace_prefix}qdhcp-"))
        if not missing and len(_dnsmasq_left(config)) >= len(wanted):
            return
        assert time.monotonic() < deadline, f"{len(missing)} networks not served"
        time.sleep(0.2)


def _dnsmasq_left(config: Config) -> list[str]:
    return [cmd for cmd in processes_of(config.state_path) if "dnsmasq" in cmd]


def _sweep(config: Config) -> None:
    """What a failed run left of this test's own prefix and state dir (never anyone else's)."""
    for namespace in linux.list_namespaces(config.namespace_prefix):
        for pid in linux.namespace_pids(namespace):
            os.kill(pid, 9)
        linux.delete_namespace(namespace)


@pytest.fixture
def running_lab(lab_config: Config) -> Iterator[tuple[Config, subprocess.Popen[str]]]:
    proc = _lab_up(lab_config)
    try:
        yield lab_config, proc
    finally:
        cli(lab_config, "lab", "down", timeout=120)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        _sweep(lab_config)


def test_boot_on_the_newest_of_50_networks_and_down_leaves_nothing(
    running_lab: tuple[Config, subprocess.Popen[str]],
) -> None:
    config, lab_up = running_lab
    ids = asyncio.run(_make_networks(config, EXTRA_NETWORKS))
    newest = ids[-1]

    booted = cli(config, "lab", "boot", "cmt-s1", "--network", newest, "--fixed-ip", "203.0.113.50")
    assert booted.returncode == 0, booted.stdout[-3000:] + booted.stderr[-3000:]
    status = cli(config, "lab", "status", "-f", "json")
    assert status.returncode == 0, status.stderr
    rows = {r["name"]: r for r in json.loads(status.stdout)}
    row = rows["cmt-s1"]
    assert row["result"] == "ok", row
    assert row["ip"] == "203.0.113.50"
    assert row["path"] == "dhcp", row  # no router: option 121 to the DHCP port
    assert row["package"] == "cmt-hello 1.0"
    assert rows["lab-1"]["result"] == "ok", rows["lab-1"]
    # The agents serve every network, not only the lab's own: all of it is for lab down.
    _wait_served(config, ids)

    down = cli(config, "lab", "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    stems = [f"{config.namespace_prefix}{s}" for s in ("qdhcp-", "qrouter-")]
    assert [ns for stem in stems for ns in linux.list_namespaces(stem)] == []
    assert _dnsmasq_left(config) == []
    assert lab_up.wait(timeout=60) is not None  # lab down ended the lab up too
    assert_nothing_left(config)
    again = cli(config, "lab", "down")
    assert again.returncode == 0 and "no lab to remove" in again.stdout


async def test_a_boot_takes_a_namespace_its_record_lost_afresh(lab_config: Config) -> None:
    """A ``vm-``/``lab-repo-`` namespace the record does not list (a lab up that wrote its old
    copy over a ``lab boot``'s record, a half-made boot) still holds an ``eth0`` whose other
    end is not the new port: taking that ``eth0`` for the port failed with ``no link tap<id> in
    namespace <prefix>fabric``. The plug starts from a fresh namespace instead."""
    config = lab_config
    fabric = cloud.bridge_namespace(config)
    namespace = f"{config.namespace_prefix}vm-cmt-stale"
    other = f"{config.namespace_prefix}elsewhere"
    network_id = "0ddba11-cmt-network"
    link = f"{config.device_prefix}tapnew"
    try:
        linux.create_namespace(namespace)
        linux.create_namespace(other)
        await linux.plug_veth(  # the old port: its other end is not on the network's bridge
            namespace,
            "eth0",
            mac="fa:16:3e:00:00:01",
            host_ifname=f"{config.device_prefix}old",
            bridge_namespace=other,
        )
        await cloud._plug(config, LabState(), namespace, link, network_id, "fa:16:3e:00:00:02")
        ends = {lk.name: lk for lk in await linux.list_links(fabric)}
        bridge = ends[bridge_name(config.device_prefix, network_id)]
        assert ends[link].master == bridge.index
        inner = {lk.name: lk for lk in await linux.list_links(namespace)}
        assert inner["eth0"].mac == "fa:16:3e:00:00:02"
    finally:
        await linux.cleanup(namespaces=[namespace, other, fabric])
