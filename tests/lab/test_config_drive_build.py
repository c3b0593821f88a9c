"""A server's config drive from the inventory: the CLI flag, the ISO, cloud-init reading it."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from admin.helpers import running_admin
from cloudmeta.api.metadata.loader import StoreSource
from cloudmeta.api.metadata.settings import document_settings
from cloudmeta.config import Config
from cloudmeta.documents import CONFIG_DRIVE_LABEL, Instance, config_drive_files
from cloudmeta.inventory import Store
from cloudmeta.lab.errors import LabError
from cloudmeta.lab.vm.configdrive import (
    build_config_drive,
    config_drive_for,
    config_drive_required,
)
from cloudmeta.linux.iso import iso_volume_id, read_iso
from inventory.dbfixtures import db_config

__all__ = ["db_config"]

pytestmark = pytest.mark.timeout(120)
USER_DATA = b"#cloud-config\nruncmd: [[touch, /run/cmt-ran]]\n"
PLACEHOLDER = b"@@cmt-seed@@"


async def _json(env: dict[str, str], *args: str) -> Any:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from cloudmeta.cli.main import main; main()",
        *args,
        "-f",
        "json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return json.loads(out)


async def _static_cloud(config: Config, tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Through the CLI, as a user: a network without DHCP, a server asking for a drive, one not."""
    async with running_admin(config) as (url, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")} | {
            "CLOUDMETA_STATE_PATH": str(config.state_path),
            "CLOUDMETA_ADMIN_URL": url,
        }
        await _json(env, "network", "create", "cmt-static")
        await _json(
            env,
            "subnet",
            "create",
            "cmt-static-v4",
            "--network",
            "cmt-static",
            "--cidr",
            "192.0.2.0/24",
            "--no-dhcp",
            "--dns",
            "198.51.100.53",
        )
        user_data = tmp_path / "cmt-user-data"
        user_data.write_bytes(USER_DATA)
        common = ["--network", "cmt-static", "--user-data", str(user_data)]
        drive = await _json(
            env,
            "server",
            "create",
            "cmt-vm",
            *common,
            "--fixed-ip",
            "192.0.2.10",
            "--hostname",
            "cmt-host",
            "--config-drive",
        )
        plain = await _json(env, "server", "create", "cmt-plain", *common)
        shown = await _json(env, "server", "show", "cmt-vm")
        assert shown["config_drive"] is True
    return drive, plain


async def _instance(config: Config, server_id: str) -> Instance:
    store = await Store.open(config, migrate=False)
    try:
        loaded = await StoreSource(store).load(server_id)
    finally:
        await store.close()
    assert loaded is not None
    return loaded.instance


def _label(image: Path) -> str:
    """The label as ds-identify and the guest's udev see it (blkid probes the image itself)."""
    return subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "LABEL", str(image)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


async def test_drive_holds_the_metadata_api_documents(db_config: Config, tmp_path: Path) -> None:
    server, plain = await _static_cloud(db_config, tmp_path)
    assert server["config_drive"] is True and plain["config_drive"] is False
    assert config_drive_required(db_config, server)
    assert not config_drive_required(db_config, plain)
    assert config_drive_required(db_config.model_copy(update={"force_config_drive": True}), plain)

    assert await config_drive_for(db_config, plain, tmp_path / "cmt-drive" / "disk.iso") is None
    image = await config_drive_for(db_config, server, tmp_path / "cmt-drive" / "disk.iso")
    assert image == tmp_path / "cmt-drive" / "disk.iso"
    assert os.listdir(image.parent) == ["disk.iso"]  # the staging directory is gone
    assert _label(image) == CONFIG_DRIVE_LABEL == await iso_volume_id(image)
    on_disk = await read_iso(image)

    instance = await _instance(db_config, server["id"])
    expected = config_drive_files(instance, document_settings(db_config), seed=lambda: PLACEHOLDER)
    assert set(on_disk) == set(expected)
    assert "openstack/latest/meta_data.json" in on_disk and "ec2/latest/meta-data.json" in on_disk
    for path, want in expected.items():
        got = on_disk[path]
        if PLACEHOLDER in want:  # a meta_data.json: its own fresh 512-byte seed
            seed = json.loads(got)["random_seed"]
            assert len(base64.b64decode(seed)) == 512
            want = want.replace(PLACEHOLDER, seed.encode())
        assert got == want, path
    assert on_disk["openstack/latest/user_data"] == USER_DATA
    meta = json.loads(on_disk["openstack/latest/meta_data.json"])
    assert meta["uuid"] == server["id"] and meta["hostname"] == "cmt-host.novalocal"
    (net,) = json.loads(on_disk["openstack/latest/network_data.json"])["networks"]
    assert (net["type"], net["ip_address"], net["netmask"]) == (
        "ipv4",
        "192.0.2.10",
        "255.255.255.0",
    )
    assert net["routes"][0] == {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}


async def test_unknown_server_or_no_inventory_says_so(db_config: Config, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="the config drive is built on the host whose database"):
        await build_config_drive(db_config, "cmt-nope", tmp_path / "cmt.iso")  # no schema
    await (await Store.open(db_config)).close()  # an empty inventory, at head
    with pytest.raises(LabError, match="cmt-nope: not in the inventory"):
        await build_config_drive(db_config, "cmt-nope", tmp_path / "cmt.iso")
    assert await config_drive_for(db_config, {"id": "cmt-nope"}, tmp_path / "cmt.iso") is None
    assert not (tmp_path / "cmt.iso").exists()


# cloud-init's own ConfigDrive datasource, run by the system Python on the drive's files: the
# seed directory it reads first (<cloud_dir>/seed/config_drive) holds them, so it never looks at
# the host's block devices. The files are extracted by xorriso rather than loop-mounted: this
# host's kernel has no iso9660 driver (the guest's kernel reads the ISO in tests/vm).
_DATASOURCE = """
import json, sys
from cloudinit import helpers
from cloudinit.sources.DataSourceConfigDrive import DataSourceConfigDrive
cloud_dir, mac = sys.argv[1:3]
ds = DataSourceConfigDrive({}, None, helpers.Paths({"cloud_dir": cloud_dir, "run_dir": cloud_dir}))
found = ds.get_data()
ds.known_macs = {mac: "eth0"}
print(json.dumps({
    "found": found, "instance_id": ds.get_instance_id(), "version": ds.version,
    "hostname": ds.metadata.get("local-hostname"), "user_data": ds.userdata_raw.decode(),
    "ec2": ds.ec2_metadata, "network": ds.network_config,
}))
"""


async def _run(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cloud_init_config_drive_datasource_reads_it(
    db_config: Config, tmp_path: Path
) -> None:
    server, _ = await _static_cloud(db_config, tmp_path)
    image = await build_config_drive(db_config, server["id"], tmp_path / "cmt-drive.iso")
    cloud_dir = tmp_path / "cmt-cloud"
    seed = cloud_dir / "seed" / "config_drive"
    code, _, err = await _run(
        "xorriso", "-osirrox", "on", "-indev", str(image), "-extract", "/", str(seed)
    )
    assert code == 0, err
    instance = await _instance(db_config, server["id"])
    mac = instance.ports[0].mac_address
    code, out, err = await _run("/usr/bin/python3", "-c", _DATASOURCE, str(cloud_dir), mac)
    assert code == 0, err
    seen = json.loads(out.splitlines()[-1])
    assert seen["found"] is True and seen["version"] == 2
    assert seen["instance_id"] == server["id"]
    assert seen["hostname"] == "cmt-host.novalocal"
    assert seen["user_data"] == USER_DATA.decode()
    assert seen["ec2"]["local-ipv4"] == "192.0.2.10"
    physical, nameserver = seen["network"]["config"]
    assert physical["type"] == "physical" and physical["mac_address"] == mac
    assert physical["name"] == "eth0"
    (subnet,) = physical["subnets"]
    assert subnet["type"] == "static" and subnet["address"] == "192.0.2.10"
    assert subnet["netmask"] == "255.255.255.0"
    assert {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"} in subnet["routes"]
    assert nameserver == {"type": "nameserver", "address": "198.51.100.53"}
