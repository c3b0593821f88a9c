"""The whole lab, end to end: ``cloudmeta lab up --once`` and instances read through the real path.

Each test gets its own state dir, ports and ``cmt-<tag>-`` namespace prefix, and removes what it
made (``lab down``) even when it fails.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from labkit import assert_nothing_left
from labkit import cli as _cli

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.documents import ec2_id
from cloudmeta.lab import cloud, instance
from cloudmeta.lab.cloudcfg import Datasource
from cloudmeta.lab.state import LabState, load_state, save_state
from cloudmeta.linux import run

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

_BOTO = """
import json, sys
from botocore.utils import InstanceMetadataFetcher
f = InstanceMetadataFetcher(timeout=2, num_attempts=2)
token = f._fetch_metadata_token()
doc = f._get_request("latest/dynamic/instance-identity/document", None, token)
print(json.dumps({"token": bool(token), "document": json.loads(doc.text)}))
"""


@pytest.mark.parametrize("force_metadata", [False, True], ids=["both-paths", "force-metadata"])
def test_lab_up_once_boots_every_instance(lab_config: Config, force_metadata: bool) -> None:
    report = lab_config.state_path / "report.json"
    args = ["lab", "up", "--once", "--instances", "4", "--report", str(report)]
    if force_metadata:
        args.append("--force-metadata")
    try:
        done = _cli(lab_config, *args)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        rows: list[dict[str, Any]] = json.loads(report.read_text())
        assert len(rows) == 4
        assert {r["network"] for r in rows} == {"isolated", "routed"}
        for row in rows:
            assert row["result"] == "ok", row
            assert row["hostname"] == f"{row['name']}-lab"
            assert row["password_set"] is True
            assert row["package"] == "cmt-hello 1.0"
            expected = "dhcp" if force_metadata or row["network"] == "isolated" else "router"
            assert row["path"] == expected, row
            prefix = "192.0.2." if row["network"] == "isolated" else "198.51.100."
            assert row["ip"].startswith(prefix) and row["metadata_next_hop"].startswith(prefix)
    finally:
        _cli(lab_config, "lab", "down", timeout=60)
    assert_nothing_left(lab_config)


@pytest.fixture
async def lab(lab_config: Config) -> AsyncIterator[tuple[Config, AdminClient, LabState]]:
    state = LabState()
    save_state(lab_config, state)
    client = AdminClient(lab_config)
    try:
        await cloud.ensure_all_in_one(lab_config, client, state, lambda _: None)
        await cloud.build_cloud(lab_config, client, state, lambda _: None)
        yield lab_config, client, state
    finally:
        await cloud.down(lab_config, load_state(lab_config) or state, client)
        await client.close()
    assert_nothing_left(lab_config)


async def _boot(
    lab: tuple[Config, AdminClient, LabState], name: str, network: str, ds: Datasource
) -> dict[str, Any]:
    config, client, state = lab
    net = next(n.id for n in state.networks.values() if n.name == network)
    await cloud.boot_instance(config, client, state, name, net, datasource=ds)
    paths = cloud.instance_paths(config, name)
    await instance.wait_booted(paths, timeout=60)
    row = await cloud.instance_row(client, config, state.instances[name])
    if row["result"] != "ok":  # what the instance said, for the assertion message
        log = paths.upper / "var/log/cloud-init.log"
        row["console"] = paths.console.read_text()[-1500:] if paths.console.exists() else None
        row["cloud_init_log"] = log.read_text()[-3000:] if log.exists() else None
    return row


def _result_json(config: Config, name: str) -> dict[str, Any]:
    path = cloud.instance_paths(config, name).upper / "var/lib/cloud/data/result.json"
    return dict(json.loads(path.read_text())["v1"])


async def test_openstack_and_ec2_datasources_read_their_own_instance(
    lab: tuple[Config, AdminClient, LabState],
) -> None:
    config, _, state = lab
    rows = await asyncio.gather(
        _boot(lab, "os-1", "isolated", Datasource.OPENSTACK),
        _boot(lab, "ec2-1", "routed", Datasource.EC2),
        _boot(lab, "ec2-2", "isolated", Datasource.EC2),
    )
    for row in rows:
        assert row["result"] == "ok", row
        assert row["hostname"] == f"{row['name']}-lab"
    assert "DataSourceOpenStack" in _result_json(config, "os-1")["datasource"]
    assert await _instance_id_seen(config, "os-1") == state.instances["os-1"].server_id
    for name in ("ec2-1", "ec2-2"):
        assert "DataSourceEc2" in _result_json(config, name)["datasource"]
        # cloud-init's own record of what it read: this instance's EC2 id, not another's.
        assert await _instance_id_seen(config, name) == ec2_id("i", state.instances[name].server_id)
        # The EC2 datasource saw an AWS platform and used IMDSv2: a token PUT first.
        log = (cloud.instance_paths(config, name).upper / "var/log/cloud-init.log").read_text()
        assert "'method': 'PUT'" in log and "latest/api/token" in log
        assert "X-aws-ec2-metadata-token" in log


async def _instance_id_seen(config: Config, name: str) -> str:
    """The instance id in cloud-init's instance-data.json (in the instance's own /run)."""
    argv = instance.exec_argv(
        cloud.instance_paths(config, name), ["cat", "/run/cloud-init/instance-data.json"]
    )
    done = await run(argv, timeout=15)
    return str(json.loads(done.stdout)["v1"]["instance_id"])


async def test_botocore_gets_a_token_and_the_identity_document(
    lab: tuple[Config, AdminClient, LabState],
) -> None:
    _, _, state = lab
    row = await _boot(lab, "boto-1", "routed", Datasource.EC2)
    assert row["result"] == "ok", row
    inst = state.instances["boto-1"]
    done = await run(
        [sys.executable, "-c", _BOTO], namespace=inst.namespace, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["token"] is True
    assert answer["document"]["instanceId"]
    assert answer["document"]["privateIp"] == inst.ip
