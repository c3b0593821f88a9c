"""A VM on a network with no DHCP and no metadata proxy boots from its config drive alone.

``cloudmeta lab boot NAME --network NET --vm --config-drive``: the drive (ISO 9660, label
``config-2``) is attached as a CD-ROM; the guest's own cloud-init picks its ``ConfigDrive``
datasource, configures the static address and routes of ``network_data.json``, sets the
hostname and password and installs the lab's package through that static address.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from vmkit import assert_nothing_left, console_tail, guest_exec, lab_config, wait_agent

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.lab import cloud
from cloudmeta.lab.state import LabNetwork, LabState, load_state, save_state
from cloudmeta.lab.vm import configdrive, image
from cloudmeta.linux import list_namespaces
from support.cli import cli

# One xdist group: the guests of both files run one after the other, never four at once.
pytestmark = [
    pytest.mark.root,
    pytest.mark.vm,
    pytest.mark.xdist_group("vm"),
    pytest.mark.timeout(600),
]

CIDR, GATEWAY, DNS = "203.0.113.0/24", "203.0.113.1", "203.0.113.53"
NAME = "cmt-vm-cd"
Lab = tuple[Config, AdminClient, LabState]


@pytest.fixture
async def lab(
    make_config: Callable[..., Config], vm_image: image.CachedImage
) -> AsyncIterator[Lab]:
    """An all-in-one and one network whose only subnet has DHCP off (so no dnsmasq, no proxy)."""
    config = lab_config(make_config)  # enable_isolated_metadata: it would serve, had it DHCP
    config = config.model_copy(update={"bridge_namespace": cloud.bridge_namespace(config)})
    state = LabState()
    save_state(config, state)
    client = AdminClient(config)
    try:
        await cloud.ensure_all_in_one(config, client, state, lambda _: None)
        network = await client.create_network("cmt-static")
        subnet = await client.create_subnet(
            network["id"], CIDR, enable_dhcp=False, dns_nameservers=[DNS]
        )
        state.networks[network["id"]] = LabNetwork(
            id=network["id"], name="cmt-static", cidr=CIDR, subnet_id=subnet["id"]
        )
        save_state(config, state)
        yield config, client, state
    finally:
        try:
            await cloud.down(config, load_state(config) or state, client)
        finally:
            await client.close()
    assert_nothing_left(config)


async def _exec(config: Config, *argv: str) -> str:
    return await guest_exec(config, NAME, *argv)


def _console(config: Config) -> str:
    return console_tail(config, NAME)


async def test_vm_without_dhcp_boots_from_its_config_drive(lab: Lab) -> None:
    config, client, state = lab
    network_id = next(iter(state.networks))
    # Nothing else can configure it: no DHCP port, so no dnsmasq and no metadata proxy.
    ports = await client.list_ports(network_id=network_id)
    assert [p for p in ports if p["device_owner"] == "network:dhcp"] == []
    assert f"{config.namespace_prefix}qdhcp-{network_id}" not in list_namespaces()

    boot = await asyncio.to_thread(
        cli, config, "lab", "boot", NAME, "--network", "cmt-static", "--vm", "--config-drive",
        "--no-wait",
    )  # fmt: skip
    assert boot.returncode == 0, boot.stdout + boot.stderr
    state = load_state(config) or state
    inst = state.instances[NAME]
    server = await client.get_server(inst.server_id)
    assert server["config_drive"] is True
    drive = configdrive.drive_path(config, NAME)
    assert drive.exists()
    assert await cloud.wait_booted(config, inst) == "ok", _console(config)

    row = await cloud.instance_row(client, config, inst)
    assert row["result"] == "ok", (row, _console(config))
    assert row["hostname"] == f"{NAME}-lab"
    assert row["password_set"] is True
    # Installed from the lab's repository on this network: the static address works.
    assert row["package"] == "cmt-hello 1.0"
    await wait_agent(config, NAME)
    result: dict[str, Any] = json.loads(await _exec(config, "cat", "/run/cloud-init/result.json"))
    assert "ConfigDrive" in result["v1"]["datasource"], result
    assert (await _exec(config, "blkid", "-L", "config-2")).strip().startswith("/dev/sr")
    addresses = await _exec(config, "ip", "-4", "-o", "addr", "show", "scope", "global")
    assert f" {inst.ip}/24 " in addresses, addresses
    routes = await _exec(config, "ip", "-4", "route")
    assert re.search(rf"^default via {re.escape(GATEWAY)} ", routes, re.M), routes
    assert "169.254.169.254" not in routes  # no DHCP option 121: nobody told it of one
    # The drive's documents are the API's: the uuid, and the hostname cloud-init set.
    meta = json.loads(await _exec(config, "sh", "-c", _READ_DRIVE))
    assert meta["uuid"] == inst.server_id and meta["hostname"] == f"{NAME}.novalocal"

    killed = await asyncio.to_thread(cli, config, "lab", "kill", NAME)
    assert killed.returncode == 0, killed.stderr
    assert not drive.exists() and not cloud.instance_paths(config, NAME).dir.exists()


_READ_DRIVE = (
    "mkdir -p /run/cmt-cd && mount -o ro $(blkid -L config-2) /run/cmt-cd && "
    "cat /run/cmt-cd/openstack/latest/meta_data.json; umount /run/cmt-cd"
)
