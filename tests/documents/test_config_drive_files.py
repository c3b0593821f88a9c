"""The config drive's files are the metadata API's documents, byte for byte (seed aside)."""

from __future__ import annotations

import json
from typing import Any

from cloudmeta.documents import (
    CONFIG_DRIVE_SKIP_VERSIONS,
    OPENSTACK_VERSIONS,
    Body,
    FixedIp,
    Instance,
    Keypair,
    Network,
    Port,
    Route,
    Seeded,
    Settings,
    Special,
    Subnet,
    config_drive_files,
    resolve,
    vendor_data2,
)
from cloudmeta.documents.openstack import dump

NET = Network(id="n-1", name="private", mtu=1450)
# No DHCP on it, no DHCP port: the drive is the guest's only source of its address.
STATIC = Subnet(
    id="s-4",
    network_id="n-1",
    ip_version=4,
    cidr="192.0.2.0/24",
    gateway_ip="192.0.2.1",
    dns_nameservers=("198.51.100.53",),
    host_routes=(Route("203.0.113.0/24", "192.0.2.254"),),
    enable_dhcp=False,
)
PORT = Port(
    id="0123456789abcdef",
    network=NET,
    mac_address="fa:16:3e:00:00:01",
    fixed_ips=(FixedIp("192.0.2.10", STATIC),),
)
VM = Instance(
    id="11111111-2222-3333-4444-555555555555",
    name="web 1",
    hostname="web-1",
    project_id="p-1",
    availability_zone="nova",
    image_id="img-1",
    key_name="mykey",
    keypairs=(Keypair("mykey", "ssh-ed25519 AAAA test@example"),),
    user_data=b"#!/bin/sh\necho hi\n",
    metadata={"role": "web"},
    ports=(PORT,),
)
SETTINGS = Settings(vendordata_providers=("StaticJSON", "DynamicJSON"), static_vendordata={"a": 1})
DYNAMIC = {"target": {"k": "v"}}
SEED = b"c2VlZA=="


def _seeds() -> Any:
    """A seed source that counts its calls, so each meta_data.json's seed is its own."""
    calls = iter(range(1000))
    return lambda: f"seed{next(calls)}".encode()


def files(instance: Instance = VM, settings: Settings = SETTINGS) -> dict[str, bytes]:
    return config_drive_files(instance, settings, seed=lambda: SEED, dynamic_vendordata=DYNAMIC)


def served(path: str, instance: Instance = VM) -> bytes:
    """What the metadata API answers for ``path``, as app.py renders each kind of answer."""
    found = resolve(instance, path, SETTINGS, None, "2026-12-03")
    if isinstance(found, Seeded):
        return found.render(SEED)
    if found is Special.VENDOR_DATA2:
        return dump(vendor_data2(SETTINGS, DYNAMIC)[0])
    assert isinstance(found, Body), (path, found)
    return found.data


def test_paths_are_novas_layout() -> None:
    names = ["meta_data.json", "user_data", "vendor_data.json", "network_data.json"]
    expected = {
        "ec2/2009-04-04/meta-data.json",
        "ec2/2009-04-04/user-data",
        "ec2/latest/meta-data.json",
        "ec2/latest/user-data",
        "openstack/2012-08-10/meta_data.json",
        "openstack/2012-08-10/user_data",
        "openstack/2013-04-04/meta_data.json",
        "openstack/2013-04-04/user_data",
    }
    for version in (*OPENSTACK_VERSIONS[2:], "latest"):
        expected |= {f"openstack/{version}/{n}" for n in names[:3]}
        if version >= "2015-10-15":
            expected.add(f"openstack/{version}/network_data.json")
        if version >= "2016-10-06":
            expected.add(f"openstack/{version}/vendor_data2.json")
    tree = files()
    assert set(tree) == expected
    assert not any(path.endswith("/password") for path in tree)
    assert next(iter(tree)).startswith("ec2/")  # Nova's order: EC2 first


def test_every_openstack_file_is_what_the_api_serves() -> None:
    tree = files()
    openstack = [path for path in tree if path.startswith("openstack/")]
    assert openstack
    for path in openstack:
        assert tree[path] == served(path), path


def test_each_meta_data_json_gets_its_own_seed() -> None:
    tree = config_drive_files(VM, SETTINGS, seed=_seeds())
    seeds = {
        json.loads(data)["random_seed"]
        for path, data in tree.items()
        if path.endswith("meta_data.json") and path != "openstack/2012-08-10/meta_data.json"
    }
    assert len(seeds) == len(OPENSTACK_VERSIONS)  # every version from Grizzly on, and latest
    assert "random_seed" not in json.loads(tree["openstack/2012-08-10/meta_data.json"])


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [pair for key, value in node.items() for pair in _leaves(value, f"{prefix}/{key}")]
    return [(prefix, node)]


def test_ec2_meta_data_json_holds_the_api_leaves() -> None:
    tree = files()
    for version in ("2009-04-04", "latest"):
        meta = json.loads(tree[f"ec2/{version}/meta-data.json"])
        assert tree[f"ec2/{version}/user-data"] == served(f"/ec2/{version}/user-data")
        leaves = _leaves(meta, f"/ec2/{version}/meta-data")
        assert len(leaves) > 10
        for path, value in leaves:
            text = "\n".join(map(str, value)) if isinstance(value, list) else str(value)
            assert served(path) == text.encode(), path
    # The listing-only "_name" is dropped, as Nova does; the key stays.
    keys = json.loads(tree["ec2/latest/meta-data.json"])["public-keys"]
    assert keys == {"0": {"openssh-key": "ssh-ed25519 AAAA test@example"}}
    assert json.loads(tree["ec2/latest/meta-data.json"])["mac"] == "fa:16:3e:00:00:01"


def test_skipped_ec2_versions_and_no_user_data() -> None:
    bare = Instance(id="u-1", name="b", hostname="b", project_id="p", ports=(PORT,))
    tree = config_drive_files(bare, SETTINGS, seed=lambda: SEED, skip_versions=())
    ec2_versions = {path.split("/")[1] for path in tree if path.startswith("ec2/")}
    assert set(CONFIG_DRIVE_SKIP_VERSIONS) < ec2_versions
    assert not any("user" in path for path in tree)


def test_vendor_data_json_absent_without_static_provider() -> None:
    dynamic_only = Settings(vendordata_providers=("DynamicJSON",))
    tree = config_drive_files(VM, dynamic_only, seed=lambda: SEED, dynamic_vendordata=DYNAMIC)
    assert not any(path.endswith("/vendor_data.json") for path in tree)
    assert json.loads(tree["openstack/latest/vendor_data2.json"]) == DYNAMIC


def test_network_data_without_dhcp_carries_the_static_address() -> None:
    data = json.loads(files()["openstack/latest/network_data.json"])
    assert data["links"] == [
        {
            "id": "tap0123456789a",
            "vif_id": PORT.id,
            "type": "bridge",
            "mtu": 1450,
            "ethernet_mac_address": "fa:16:3e:00:00:01",
        }
    ]
    assert data["networks"] == [
        {
            "id": "network0",
            "type": "ipv4",
            "link": "tap0123456789a",
            "ip_address": "192.0.2.10",
            "netmask": "255.255.255.0",
            "routes": [
                {"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"},
                {"network": "203.0.113.0", "netmask": "255.255.255.0", "gateway": "192.0.2.254"},
            ],
            "network_id": "n-1",
            "services": [{"type": "dns", "address": "198.51.100.53"}],
        }
    ]
    assert data["services"] == [{"type": "dns", "address": "198.51.100.53"}]
