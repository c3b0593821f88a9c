"""The seed's worked example with real virtual machines: QEMU guests, their own kernel, DHCP and
cloud-init, finding the metadata service by themselves.

Two labs at once (two guests, the most this suite runs together): one with ``force_metadata``
whose VM on the isolated network reaches 169.254.169.254 through the DHCP port (the option-121
host route), one without whose VM behind the router takes the iptables REDIRECT path and, given
EC2's SMBIOS strings, reads the EC2 tree with IMDSv2 tokens. The
image is the machine-wide cached one (built here once; a second run does not rebuild it).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from vmkit import (
    assert_nothing_left,
    console_tail,
    guest_exec,
    lab_config,
    qemu_pids_under,
    wait_agent,
)

from cloudmeta.adminclient import AdminClient
from cloudmeta.config import Config
from cloudmeta.lab import cloud
from cloudmeta.lab.cloudcfg import Datasource
from cloudmeta.lab.state import LabState, load_state, save_state
from cloudmeta.lab.vm import image
from cloudmeta.lab.vm.runtime import prepare
from cloudmeta.linux import list_links
from support.cli import cli

# One xdist group: the guests of both files run one after the other, never four at once.
pytestmark = [
    pytest.mark.root,
    pytest.mark.vm,
    pytest.mark.xdist_group("vm"),
    pytest.mark.timeout(900),
]

Lab = tuple[Config, AdminClient, LabState]


def _config(make_config: Callable[..., Config], tag: str, **extra: Any) -> Config:
    state_path = make_config().state_path / tag
    return lab_config(make_config, state_path=state_path, bridge_namespace="", **extra)


async def _lab(config: Config) -> Lab:
    config = config.model_copy(update={"bridge_namespace": cloud.bridge_namespace(config)})
    state = LabState()
    save_state(config, state)
    client = AdminClient(config)
    await cloud.ensure_all_in_one(config, client, state, lambda _: None)
    await cloud.build_cloud(config, client, state, lambda _: None)
    return config, client, state


async def _down(lab: Lab) -> None:
    config, client, state = lab
    try:
        await cloud.down(config, load_state(config) or state, client)
    finally:
        await client.close()


@pytest.fixture
async def labs(
    make_config: Callable[..., Config], vm_image: image.CachedImage
) -> AsyncIterator[tuple[Lab, Lab]]:
    forced = _config(make_config, "forced", force_metadata=True)
    plain = _config(make_config, "plain")
    made: list[Lab] = []
    try:
        for found in await asyncio.gather(_lab(forced), _lab(plain), return_exceptions=True):
            if isinstance(found, BaseException):
                raise found
            made.append(found)
        yield made[0], made[1]
    finally:
        await asyncio.gather(*(_down(lab) for lab in made))
        for config in (forced, plain):
            if (config.state_path / "lab").exists():  # a lab that failed before `made`
                state = load_state(config)
                if state is not None:
                    await cloud.down(config, state, None)
    for lab in made:
        assert_nothing_left(lab[0])


async def _check_guest(
    lab: Lab, name: str, expected_hop: str, path: str, datasource: str = "OpenStack"
) -> None:
    """The seed's chapter, inside the guest: route, curl, hostname, password, package."""
    config, client, state = lab
    inst = state.instances[name]
    row = await cloud.instance_row(client, config, inst)
    assert row["result"] == "ok", (row, console_tail(config, name))
    assert row["path"] == path and row["metadata_next_hop"] == expected_hop, row
    assert row["hostname"] == f"{name}-lab"
    assert row["password_set"] is True
    assert row["package"] == "cmt-hello 1.0"
    assert isinstance(row["boot_seconds"], float) and 0 < row["boot_seconds"] < 400
    await wait_agent(config, name)
    routes = await guest_exec(config, name, "ip", "-4", "route")
    if path == "dhcp":  # the option-121 host route from dnsmasq
        assert re.search(rf"^169\.254\.169\.254 via {re.escape(expected_hop)} ", routes, re.M), (
            routes
        )
    else:  # no host route: the default gateway (the router's qr- port) takes it
        assert "169.254.169.254" not in routes, routes
        assert re.search(rf"^default via {re.escape(expected_hop)} ", routes, re.M), routes
    addresses = await guest_exec(config, name, "ip", "-4", "-o", "addr", "show", "scope", "global")
    assert f" {inst.ip}/" in addresses, addresses
    versions = await guest_exec(config, name, "curl", "-sf", "http://169.254.169.254/openstack")
    assert versions.splitlines()[-1] == "latest", versions  # Nova's list, newest last
    meta = json.loads(
        await guest_exec(
            config, name, "curl", "-sf", "http://169.254.169.254/openstack/latest/meta_data.json"
        )
    )
    assert meta["uuid"] == inst.server_id
    token = await guest_exec(
        config,
        name,
        "curl",
        "-sf",
        "-X",
        "PUT",
        "-H",
        "X-aws-ec2-metadata-token-ttl-seconds: 60",
        "http://169.254.169.254/latest/api/token",
    )
    local_ip = await guest_exec(
        config,
        name,
        "curl",
        "-sf",
        "-H",
        f"X-aws-ec2-metadata-token: {token}",
        "http://169.254.169.254/latest/meta-data/local-ipv4",
    )
    assert local_ip == inst.ip
    assert (await guest_exec(config, name, "hostname")).strip() == f"{name}-lab"
    shadow = await guest_exec(config, name, "getent", "shadow", "debian")
    assert shadow.split(":")[1].startswith("$"), shadow
    assert (await guest_exec(config, name, "cmt-hello", "--version")).strip() == "cmt-hello 1.0"
    # cloud-init chose the datasource by itself (ds-identify read the SMBIOS strings).
    result = json.loads(await guest_exec(config, name, "cat", "/run/cloud-init/result.json"))
    assert f"DataSource{datasource}" in result["v1"]["datasource"], result
    if datasource == "Ec2":  # an AWS platform: IMDSv2, a token PUT before every read
        log = await guest_exec(config, name, "cat", "/var/log/cloud-init.log")
        assert "'method': 'PUT'" in log and "latest/api/token" in log
        assert "X-aws-ec2-metadata-token" in log


async def test_vms_reach_the_metadata_service_by_dhcp_route_and_by_router_redirect(
    labs: tuple[Lab, Lab],
) -> None:
    forced, plain = labs
    config_a, client_a, state_a = forced
    config_b, client_b, state_b = plain
    # A: through the CLI, as a user would (`lab boot --vm`), not waiting.
    done = await asyncio.to_thread(
        cli, config_a, "lab", "boot", "cmt-vm-a", "--network", "isolated", "--vm", "--no-wait"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "accelerator: " in done.stderr
    state_a = load_state(config_a) or state_a
    forced = (config_a, client_a, state_a)
    # B: through the lab's Python API, as an EC2 guest (AWS's SMBIOS strings).
    options = await prepare(Config().image_cache_path)
    routed = next(n.id for n in state_b.networks.values() if n.name == "routed")
    await cloud.boot_instance(
        config_b, client_b, state_b, "cmt-vm-b", routed, vm=options, datasource=Datasource.EC2
    )
    results = await asyncio.gather(
        cloud.wait_booted(config_a, state_a.instances["cmt-vm-a"]),
        cloud.wait_booted(config_b, state_b.instances["cmt-vm-b"]),
    )
    assert results == ["ok", "ok"], (
        console_tail(config_a, "cmt-vm-a"),
        console_tail(config_b, "cmt-vm-b"),
    )
    dhcp_ip = await _dhcp_port_ip(client_a, state_a.instances["cmt-vm-a"].network_id)
    router_ip = await _router_ip(client_b, state_b.instances["cmt-vm-b"].network_id)
    await _check_guest(forced, "cmt-vm-a", dhcp_ip, "dhcp")
    await _check_guest(plain, "cmt-vm-b", router_ip, "router", "Ec2")

    # `lab status -f json` and `lab exec` through the CLI for the VM.
    status = await asyncio.to_thread(cli, config_a, "lab", "status", "-f", "json")
    rows = {r["name"]: r for r in json.loads(status.stdout)}
    row = rows["cmt-vm-a"]
    for key in ("name", "path", "hostname", "password_set", "package", "result", "boot_seconds"):
        assert row[key] not in (None, "-"), row
    run = await asyncio.to_thread(
        cli, config_a, "lab", "exec", "cmt-vm-a", "--", "sh", "-c", "hostname; exit 3"
    )
    assert run.returncode == 3 and run.stdout.strip() == "cmt-vm-a-lab", run

    # `lab kill`: QEMU, tap, overlay and the instance's files are gone.
    paths = cloud.instance_paths(config_a, "cmt-vm-a")
    link = state_a.instances["cmt-vm-a"].link
    killed = await asyncio.to_thread(cli, config_a, "lab", "kill", "cmt-vm-a")
    assert killed.returncode == 0, killed.stderr
    assert qemu_pids_under(paths.dir) == [] and not paths.dir.exists()
    fabric = cloud.bridge_namespace(config_a)
    assert link not in {found.name for found in await list_links(fabric)}


async def _dhcp_port_ip(client: AdminClient, network_id: str) -> str:
    ports = await client.list_ports(network_id=network_id)
    return str(
        next(p for p in ports if p["device_owner"] == "network:dhcp")["fixed_ips"][0]["ip_address"]
    )


async def _router_ip(client: AdminClient, network_id: str) -> str:
    ports = await client.list_ports(network_id=network_id)
    owners = ("network:router_interface", "network:router_interface_distributed")
    return str(next(p for p in ports if p["device_owner"] in owners)["fixed_ips"][0]["ip_address"])
