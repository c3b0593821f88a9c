"""Golden documents: hand-written expectations in Nova's exact format (order, spacing, keys)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from cloudmeta.documents import (
    Body,
    Device,
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
    ec2_id,
    network_data,
    path_tokens,
    resolve,
)

NET = Network(id="n-1", name="private", mtu=1450)
V4 = Subnet(
    id="s-4",
    network_id="n-1",
    ip_version=4,
    cidr="192.0.2.0/24",
    gateway_ip="192.0.2.1",
    dns_nameservers=("198.51.100.53",),
    host_routes=(Route("203.0.113.0/24", "192.0.2.254"),),
    enable_dhcp=False,
)
V6 = Subnet(
    id="s-6",
    network_id="n-1",
    ip_version=6,
    cidr="2001:db8:1::/64",
    gateway_ip="2001:db8:1::1",
    ipv6_address_mode="slaac",
)
PORT = Port(
    id="0123456789abcdef",
    network=NET,
    mac_address="fa:16:3e:00:00:01",
    fixed_ips=(FixedIp("192.0.2.10", V4), FixedIp("2001:db8:1::10", V6)),
)
KEY = Keypair("mykey", "ssh-ed25519 AAAA test@example")
VM = Instance(
    id="11111111-2222-3333-4444-555555555555",
    name="web 1",
    hostname="web-1",
    project_id="p-1",
    availability_zone="nova",
    flavor="m1.small",
    image_id="img-1",
    key_name="mykey",
    keypairs=(KEY,),
    user_data=b"#!/bin/sh\necho hi\n",
    metadata={"role": "web"},
    launch_index=0,
    created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    ports=(PORT,),
)
SETTINGS = Settings(static_vendordata={"a": 1})
TODAY = "2026-11-25"


def get(path: str, instance: Instance = VM, settings: Settings = SETTINGS) -> Body:
    found = resolve(instance, path, settings, "192.0.2.99", TODAY)
    assert isinstance(found, Body), found
    return found


def missing(path: str) -> None:
    assert resolve(VM, path, SETTINGS, None, TODAY) is None


def test_root_lists_ec2_versions_and_latest() -> None:
    expected = (
        b"1.0\n2007-01-19\n2007-03-01\n2007-08-29\n2007-10-10\n2007-12-15\n"
        b"2008-02-01\n2008-09-01\n2009-04-04\nlatest"
    )
    assert get("/").data == expected
    assert get("").data == expected
    assert get("/ec2").data == expected
    assert get("/").content_type == "text/plain; charset=UTF-8"


def test_openstack_listing_hides_future_versions() -> None:
    assert get("/openstack").data == (
        b"2012-08-10\n2013-04-04\n2013-10-17\n2015-10-15\n2016-06-30\n2016-10-06\n"
        b"2017-02-22\n2018-08-27\n2020-10-14\n2025-04-04\nlatest"
    )
    early = resolve(VM, "/openstack/", SETTINGS, None, "2016-07-01")
    assert isinstance(early, Body)
    assert early.data.endswith(b"2016-06-30\nlatest")
    # A future version stays requestable by name.
    assert resolve(VM, "/openstack/2025-04-04/meta_data.json", SETTINGS, None, "2016-07-01")


def test_openstack_version_listing_by_date() -> None:
    assert get("/openstack/2012-08-10").data == b"meta_data.json\nuser_data"
    assert get("/openstack/2013-04-04/").data == b"meta_data.json\nuser_data\npassword"
    assert get("/openstack/latest").data == (
        b"meta_data.json\nuser_data\npassword\nvendor_data.json\nnetwork_data.json\n"
        b"vendor_data2.json"
    )
    bare = Instance(id="x", name="x", hostname="x", project_id="p")
    listing = resolve(bare, "/openstack/2015-10-15", SETTINGS, None, TODAY)
    assert isinstance(listing, Body)
    assert listing.data == b"meta_data.json\npassword\nvendor_data.json\nnetwork_data.json"


def _meta(path: str, instance: Instance = VM) -> bytes:
    found = resolve(instance, path, SETTINGS, None, TODAY)
    assert isinstance(found, Seeded)
    assert found.content_type == "application/json"
    return found.render(b"SEED")


def test_meta_data_latest_golden() -> None:
    assert _meta("/openstack/latest/meta_data.json") == (
        b'{"uuid": "11111111-2222-3333-4444-555555555555", "meta": {"role": "web"}, '
        b'"public_keys": {"mykey": "ssh-ed25519 AAAA test@example"}, '
        b'"keys": [{"name": "mykey", "type": "ssh", "data": "ssh-ed25519 AAAA test@example"}], '
        b'"hostname": "web-1.novalocal", "name": "web 1", "launch_index": 0, '
        b'"availability_zone": "nova", "random_seed": "SEED", "project_id": "p-1", '
        b'"devices": [], "dedicated_cpus": []}'
    )


def test_meta_data_folsom_has_no_seed_nor_project() -> None:
    found = resolve(VM, "/openstack/2012-08-10/meta_data.json", SETTINGS, None, TODAY)
    assert isinstance(found, Body)
    data = json.loads(found.data)
    assert list(data) == [
        "uuid", "meta", "public_keys", "keys", "hostname", "name", "launch_index",
        "availability_zone",
    ]  # fmt: skip


def test_meta_data_by_version_fields() -> None:
    fields = {
        "2013-04-04": "random_seed",
        "2015-10-15": "project_id",
        "2016-06-30": "devices",
        "2020-10-14": "dedicated_cpus",
    }
    for version, field in fields.items():
        data = json.loads(_meta(f"/openstack/{version}/meta_data.json").replace(b"SEED", b"x"))
        assert list(data)[-1] == field, version


def test_meta_data_without_key_meta_or_domain() -> None:
    vm = Instance(id="u", name="n", hostname="h", project_id="p")
    found = resolve(vm, "/openstack/2013-04-04/meta_data.json", Settings(dhcp_domain=""), None, "")
    assert isinstance(found, Seeded)
    assert found.render(b"S") == (
        b'{"uuid": "u", "hostname": "h", "name": "n", "launch_index": 0, '
        b'"availability_zone": null, "random_seed": "S"}'
    )


def test_devices_by_version() -> None:
    vm = Instance(
        id="u",
        name="n",
        hostname="h",
        project_id="p",
        devices=(
            Device("nic", "pci", "0000:00:02.0", ("nfv",), mac="fa:16:3e:00:00:09", vlan=42),
            Device("nic", "pci", "0000:00:03.0", mac="fa:16:3e:00:00:0a"),
            Device("disk", "scsi", "0:0:0:1", ("db",), serial="s1", path="/dev/sdb"),
            Device("share", "none", "none", share_id="sh", tag="t"),
            Device("nic", "weird", "x", ("t",), mac="m"),
        ),
    )
    newton = json.loads(_meta("/openstack/2016-06-30/meta_data.json", vm).replace(b"SEED", b""))
    assert newton["devices"] == [
        {"bus": "pci", "address": "0000:00:02.0", "tags": ["nfv"], "type": "nic",
         "mac": "fa:16:3e:00:00:09"},
        {"bus": "scsi", "address": "0:0:0:1", "tags": ["db"], "type": "disk", "serial": "s1",
         "path": "/dev/sdb"},
    ]  # fmt: skip
    latest = json.loads(_meta("/openstack/latest/meta_data.json", vm).replace(b"SEED", b""))
    assert [d["type"] for d in latest["devices"]] == ["nic", "nic", "disk", "share"]
    assert latest["devices"][0]["vlan"] == 42
    assert latest["devices"][1] == {
        "bus": "pci", "address": "0000:00:03.0", "type": "nic", "mac": "fa:16:3e:00:00:0a",
        "vf_trusted": False,
    }  # fmt: skip


def test_network_data_static_v4_and_slaac_v6() -> None:
    body = get("/openstack/latest/network_data.json")
    assert body.content_type == "text/plain; charset=UTF-8"
    assert body.data == (
        b'{"links": [{"id": "tap0123456789a", "vif_id": "0123456789abcdef", "type": "bridge", '
        b'"mtu": 1450, "ethernet_mac_address": "fa:16:3e:00:00:01"}], '
        b'"networks": [{"id": "network0", "type": "ipv4", "link": "tap0123456789a", '
        b'"ip_address": "192.0.2.10", "netmask": "255.255.255.0", "routes": ['
        b'{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "192.0.2.1"}, '
        b'{"network": "203.0.113.0", "netmask": "255.255.255.0", "gateway": "192.0.2.254"}], '
        b'"network_id": "n-1", "services": [{"type": "dns", "address": "198.51.100.53"}]}, '
        b'{"id": "network1", "type": "ipv6_slaac", "link": "tap0123456789a", '
        b'"ip_address": "2001:db8:1::10", "netmask": "ffff:ffff:ffff:ffff::", "routes": ['
        b'{"network": "::", "netmask": "::", "gateway": "2001:db8:1::1"}], '
        b'"network_id": "n-1", "services": []}], '
        b'"services": [{"type": "dns", "address": "198.51.100.53"}]}'
    )


def test_network_data_dhcp_form_and_null_mtu() -> None:
    dhcp4 = Subnet("s-d", "n-2", 4, "198.51.100.0/24", "198.51.100.1", dhcp_server="198.51.100.2")
    port = Port(
        "p2", Network("n-2", mtu=1500), "fa:16:3e:00:00:02", (FixedIp("198.51.100.5", dhcp4),)
    )
    vm = Instance(id="u", name="n", hostname="h", project_id="p", ports=(port,))
    assert network_data(vm) == {
        "links": [{"id": "tapp2", "vif_id": "p2", "type": "bridge", "mtu": None,
                   "ethernet_mac_address": "fa:16:3e:00:00:02"}],
        "networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tapp2", "network_id": "n-2"}],
        "services": [],
    }  # fmt: skip
    assert network_data(Instance(id="u", name="n", hostname="h", project_id="p")) == {}


def test_user_data_vendor_data_and_password() -> None:
    assert get("/openstack/latest/user_data").data == b"#!/bin/sh\necho hi\n"
    vendor = get("/openstack/latest/vendor_data.json")
    assert (vendor.data, vendor.content_type) == (b'{"a": 1}', "application/json")
    assert resolve(VM, "/openstack/latest/password", SETTINGS, None, TODAY) is Special.PASSWORD
    assert resolve(VM, "/openstack/latest/vendor_data2.json", SETTINGS, None, TODAY) is (
        Special.VENDOR_DATA2
    )
    missing("/openstack/2012-08-10/password")
    missing("/openstack/2013-04-04/vendor_data.json")
    missing("/openstack/2013-10-17/network_data.json")
    missing("/openstack/2016-06-30/vendor_data2.json")
    no_static = Settings(vendordata_providers=("DynamicJSON",))
    assert resolve(VM, "/openstack/latest/vendor_data.json", no_static, None, TODAY) is None


def test_unknown_paths_are_none() -> None:
    for path in (
        "/openstack/2011-01-01/meta_data.json",
        "/openstack/content",
        "/openstack/content/0000",
        "/openstack/latest/nope",
        "/openstack/latest/meta_data.json/uuid",
        "/1999-01-01/meta-data/",
        "/latest/meta-data/nope",
        "/latest/meta-data/hostname/more",
    ):
        missing(path)


def test_ec2_meta_data_listing_2009() -> None:
    assert get("/2009-04-04/meta-data/").data == (
        b"ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\n"
        b"instance-action\ninstance-id\ninstance-type\nlocal-hostname\nlocal-ipv4\n"
        b"placement/\npublic-hostname\npublic-ipv4\npublic-keys/\nreservation-id\n"
        b"security-groups"
    )
    assert get("/2009-04-04").data == b"meta-data/\nuser-data"
    assert get("/ec2/2009-04-04/meta-data/").data == get("/2009-04-04/meta-data").data


def test_ec2_version_gates() -> None:
    assert get("/1.0/meta-data/").data == (
        b"ami-id\nami-launch-index\nami-manifest-path\nhostname\ninstance-id\nlocal-ipv4\n"
        b"public-keys/\nreservation-id\nsecurity-groups"
    )
    listing = get("/2007-12-15/meta-data/").data.split(b"\n")
    assert b"block-device-mapping/" in listing
    assert b"placement/" not in listing


def test_ec2_leaves() -> None:
    assert get("/latest/meta-data/public-keys").data == b"0=mykey"
    assert get("/latest/meta-data/public-keys/0").data == b"openssh-key"
    assert get("/latest/meta-data/public-keys/0/openssh-key").data == KEY.public_key.encode()
    assert get("/latest/meta-data/hostname").data == b"web-1.novalocal"
    assert get("/latest/meta-data/local-ipv4").data == b"192.0.2.10"
    assert get("/latest/meta-data/ami-launch-index").data == b"0"
    assert get("/latest/meta-data/ami-manifest-path").data == b"FIXME"
    assert get("/latest/meta-data/instance-id").data == ec2_id("i", VM.id).encode()
    assert get("/latest/meta-data/instance-id").data.startswith(b"i-")
    assert get("/latest/meta-data/block-device-mapping/").data == b"ami\nroot"
    assert get("/latest/meta-data/block-device-mapping/root").data == b"/dev/vda"
    assert get("/latest/meta-data/placement/availability-zone").data == b"nova"
    assert get("/latest/meta-data/security-groups").data == b"default"
    assert get("/latest/meta-data/instance-action").data == b"none"
    assert get("/latest/meta-data/public-ipv4").data == b""
    assert get("/latest/user-data").data == VM.user_data


def test_ec2_latest_extensions() -> None:
    assert get("/latest").data == b"dynamic/\nmeta-data/\nuser-data"
    assert get("/latest/meta-data/mac").data == b"fa:16:3e:00:00:01"
    macs = "/latest/meta-data/network/interfaces/macs/"
    assert get(macs).data == b"fa:16:3e:00:00:01/"
    assert get(macs + "fa:16:3e:00:00:01/").data == (
        b"device-number\ninterface-id\nipv6s\nlocal-ipv4s\nmac\nowner-id\nsubnet-id\n"
        b"subnet-ipv4-cidr-block\nsubnet-ipv6-cidr-blocks\nvpc-id"
    )
    assert get(macs + "fa:16:3e:00:00:01/local-ipv4s").data == b"192.0.2.10"
    assert get("/latest/dynamic/instance-identity/").data == b"document\npkcs7\nsignature"
    doc = json.loads(get("/latest/dynamic/instance-identity/document").data)
    assert doc["instanceId"] == ec2_id("i", VM.id)
    assert doc["privateIp"] == "192.0.2.10"
    assert doc["pendingTime"] == "2026-01-02T03:04:05Z"
    sig = resolve(VM, "/latest/dynamic/instance-identity/signature", SETTINGS, None, TODAY)
    assert sig is Special.IDENTITY_SIGNATURE
    missing("/2009-04-04/dynamic/instance-identity/document")


def test_aws_dated_versions_serve_the_latest_tree_unlisted() -> None:
    # cloud-init's Ec2 datasource on AWS picks the first of these that answers instance-id.
    for version in ("2021-03-23", "2018-09-24", "2016-09-02"):
        assert get(f"/{version}/meta-data/instance-id").data == ec2_id("i", VM.id).encode()
        doc = json.loads(get(f"/{version}/dynamic/instance-identity/document").data)
        assert doc["instanceId"] == ec2_id("i", VM.id)
    assert b"2021-03-23" not in get("/").data
    missing("/2019-10-01/meta-data/instance-id")


def test_instance_tags_in_the_ec2_tree_only_when_opted_in() -> None:
    """AWS's meta-data/tags/instance: keys listed sorted, each a Nova tag with an empty value;
    absent unless instance_metadata_tags is on, absent from Nova's dated tree, and never in
    meta_data.json (Nova's has no server tags in any version)."""
    tagged = replace(VM, tags=("web", "blue", ".."))
    assert "tags/" not in get("/latest/meta-data/", tagged).data.decode().split("\n")
    missing_in = resolve(tagged, "/latest/meta-data/tags/instance", SETTINGS, None, TODAY)
    assert missing_in is None
    shown = replace(tagged, metadata_tags=True)
    assert "tags/" in get("/latest/meta-data/", shown).data.decode().split("\n")
    missing("/latest/meta-data/tags")
    assert get("/latest/meta-data/tags/", shown).data == b"instance/"
    assert get("/latest/meta-data/tags/instance", shown).data == b"blue\nweb"
    assert get("/2021-03-23/meta-data/tags/instance/web", shown).data == b""
    assert resolve(shown, "/2009-04-04/meta-data/tags/instance", SETTINGS, None, TODAY) is None
    assert resolve(shown, "/latest/meta-data/tags/instance/red", SETTINGS, None, TODAY) is None
    empty = replace(VM, metadata_tags=True)
    assert get("/latest/meta-data/tags/instance", empty).data == b""
    for version in ("2025-04-04", "latest"):
        data = json.loads(_meta(f"/openstack/{version}/meta_data.json", shown))
        assert "tags" not in data


def test_local_ipv4_falls_back_to_the_caller_address() -> None:
    vm = Instance(id="u", name="n", hostname="h", project_id="p")
    assert get("/latest/meta-data/local-ipv4", vm).data == b"192.0.2.99"
    assert get("/latest/meta-data/", vm).data.count(b"public-keys") == 0


def test_path_normalisation_never_escapes() -> None:
    assert path_tokens("/") == ["ec2"]
    assert path_tokens("//openstack//latest/") == ["openstack", "latest"]
    assert path_tokens("/openstack/../../../etc/passwd") == ["ec2", "etc", "passwd"]
    assert path_tokens("/latest/meta-data/../user-data") == ["ec2", "latest", "user-data"]
    assert path_tokens("/2009-04-04/meta-data/") == ["ec2", "2009-04-04", "meta-data"]
    assert get("/latest/meta-data/../user-data").data == VM.user_data
    missing("/../../etc/passwd")
