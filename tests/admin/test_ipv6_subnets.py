"""IPv6 subnets as Neutron has them: ``ipv6_address_mode`` / ``ipv6_ra_mode``, their checks
(4xx naming the field), EUI-64 addresses on SLAAC and DHCPv6-stateless subnets, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from admin.helpers import running_admin
from cloudmeta.adminclient import AdminClient, AdminError
from cloudmeta.config import Config
from cloudmeta.inventory.rules import eui64_address

MAC = "fa:16:3e:12:34:56"


def test_eui64_is_the_kernels_address() -> None:
    # The address Linux forms from this MAC (seen on a lab instance's eth0 with accept_ra).
    assert str(eui64_address("2001:db8:1::/64", "fa:16:3e:00:00:05")) == (
        "2001:db8:1:0:f816:3eff:fe00:5"
    )


async def test_modes_are_kept_and_shown(admin: AdminClient) -> None:
    network = await admin.create_network("cmt-v6l-net")
    made = {}
    for mode in ("slaac", "dhcpv6-stateful", "dhcpv6-stateless"):
        cidr = {"slaac": "2001:db8:1::/64", "dhcpv6-stateful": "2001:db8:2::/64"}.get(
            mode, "2001:db8:3::/64"
        )
        made[mode] = await admin.create_subnet(
            network["id"], cidr, ipv6_address_mode=mode, ipv6_ra_mode=mode
        )
    external = await admin.create_subnet(
        network["id"], "2001:db8:4::/64", ipv6_address_mode="slaac"
    )
    v4 = await admin.create_subnet(network["id"], "192.0.2.0/24")
    for mode, subnet in made.items():
        shown = await admin.get_subnet(subnet["id"])
        assert (shown["ipv6_address_mode"], shown["ipv6_ra_mode"]) == (mode, mode)
    assert (external["ipv6_address_mode"], external["ipv6_ra_mode"]) == ("slaac", None)
    assert (v4["ipv6_address_mode"], v4["ipv6_ra_mode"]) == (None, None)
    bundle = await admin.get_network_dhcp(network["id"])
    assert {s["id"]: s["ipv6_ra_mode"] for s in bundle["subnets"]}[made["slaac"]["id"]] == "slaac"


BAD = [
    ({"cidr": "192.0.2.0/24", "ipv6_ra_mode": "slaac"}, "not valid when ip_version is 4"),
    ({"cidr": "192.0.2.0/24", "ipv6_address_mode": "slaac"}, "ipv6_address_mode"),
    (
        {"cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "ipv6_address_mode": "dhcpv6-stateful"},
        "they must be the same value",
    ),
    ({"cidr": "2001:db8::/64", "ipv6_ra_mode": "slaac", "enable_dhcp": False}, "enable_dhcp"),
    ({"cidr": "2001:db8::/80", "ipv6_address_mode": "slaac"}, "requires the prefix to be /64"),
    ({"cidr": "2001:db8::/80", "ipv6_ra_mode": "dhcpv6-stateless"}, "/64"),
    ({"cidr": "2001:db8::/64", "ipv6_ra_mode": "radvd"}, "ipv6_ra_mode"),
]


async def test_bad_modes_are_400_naming_the_field(admin: AdminClient) -> None:
    network = await admin.create_network("cmt-v6l-bad")
    before = await admin.revision()
    for body, needle in BAD:
        with pytest.raises(AdminError) as info:
            await admin.request(
                "POST", "/v1/subnets", json={"subnet": {"network_id": network["id"], **body}}
            )
        assert info.value.status == 400, (body, info.value)
        assert needle in info.value.message, (body, info.value.message)
    # A stateful /80 is fine: dnsmasq hands out the addresses, no EUI-64 needed.
    await admin.create_subnet(network["id"], "2001:db8::/80", ipv6_address_mode="dhcpv6-stateful")
    assert await admin.revision() == before + 1


async def test_auto_address_subnets_give_the_eui64_of_the_mac(admin: AdminClient) -> None:
    network = await admin.create_network("cmt-v6l-eui")
    v4 = await admin.create_subnet(network["id"], "192.0.2.0/24")
    slaac = await admin.create_subnet(
        network["id"], "2001:db8:1::/64", ipv6_address_mode="slaac", ipv6_ra_mode="slaac"
    )
    port = await admin.create_port(network["id"], mac_address=MAC)
    assert {f["subnet_id"]: f["ip_address"] for f in port["fixed_ips"]} == {
        v4["id"]: "192.0.2.2",
        slaac["id"]: "2001:db8:1:0:f816:3eff:fe12:3456",
    }
    asked = await admin.create_port(
        network["id"], mac_address="fa:16:3e:00:00:07", fixed_ips=[{"subnet_id": slaac["id"]}]
    )
    assert asked["fixed_ips"][0]["ip_address"] == "2001:db8:1:0:f816:3eff:fe00:7"
    with pytest.raises(AdminError) as info:
        await admin.create_port(
            network["id"], fixed_ips=[{"subnet_id": slaac["id"], "ip_address": "2001:db8:1::9"}]
        )
    assert info.value.status == 400 and "automatic" in info.value.message
    stateful_net = await admin.create_network("cmt-v6l-stateful")
    await admin.create_subnet(
        stateful_net["id"], "2001:db8:2::/64", ipv6_address_mode="dhcpv6-stateful"
    )
    pooled = await admin.create_port(stateful_net["id"], mac_address=MAC)
    assert pooled["fixed_ips"][0]["ip_address"] == "2001:db8:2::2"  # from the pool


async def test_cli_subnet_create_with_ipv6_modes(make_config: Any, state_dir: Path) -> None:
    config: Config = make_config()
    async with running_admin(config) as (url, _):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDMETA_")} | {
            "CLOUDMETA_STATE_PATH": str(state_dir),
            "CLOUDMETA_ADMIN_URL": url,
        }

        async def cli(*args: str) -> tuple[int, str, str]:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "from cloudmeta.cli.main import main; main()",
                *args,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await process.communicate()
            assert process.returncode is not None
            return process.returncode, out.decode(), err.decode()

        assert (await cli("network", "create", "cmt-v6l-cli"))[0] == 0
        code, out, err = await cli(
            "subnet", "create", "cmt-v6l-sub", "--network", "cmt-v6l-cli",
            "--cidr", "2001:db8::/64", "--ipv6-address-mode", "dhcpv6-stateless",
            "--ipv6-ra-mode", "dhcpv6-stateless", "-f", "json",
        )  # fmt: skip
        assert code == 0, err
        subnet = json.loads(out)
        assert (subnet["ipv6_address_mode"], subnet["ipv6_ra_mode"]) == ("dhcpv6-stateless",) * 2
        code, _, err = await cli(
            "subnet", "create", "cmt-v6l-x", "--network", "cmt-v6l-cli",
            "--cidr", "2001:db8:1::/64", "--ipv6-ra-mode", "slaac",
            "--ipv6-address-mode", "dhcpv6-stateful",
        )  # fmt: skip
        assert code != 0 and "same value" in err
        code, _, err = await cli(
            "subnet", "create", "cmt-v6l-y", "--network", "cmt-v6l-cli",
            "--cidr", "2001:db8:2::/64", "--ipv6-ra-mode", "stateful",
        )  # fmt: skip
        # click refuses a value Neutron does not have, and lists the ones it has
        assert code != 0 and "dhcpv6-stateful" in err, err


async def test_ipv6_subnet_joins_the_routers_port_on_its_network(admin: AdminClient) -> None:
    """One qr- port per network: the IPv6 gateway is added to the router's IPv4 port there
    (two ports on one bridge would answer ARP for each other), and leaves it on removal."""
    network = await admin.create_network("cmt-v6l-dual")
    v4 = await admin.create_subnet(network["id"], "198.51.100.0/24")
    v6 = await admin.create_subnet(
        network["id"], "2001:db8:2::/64", ipv6_address_mode="dhcpv6-stateless",
        ipv6_ra_mode="dhcpv6-stateless",
    )  # fmt: skip
    router = await admin.create_router("cmt-v6l-r")
    await admin.add_router_interface(router["id"], v4["id"])
    router = await admin.add_router_interface(router["id"], v6["id"])
    assert {(i["subnet_id"], i["ip_address"]) for i in router["interfaces"]} == {
        (v4["id"], "198.51.100.1"),
        (v6["id"], "2001:db8:2::1"),
    }
    assert len({i["port_id"] for i in router["interfaces"]}) == 1
    (port,) = await admin.list_ports(device_id=router["id"])
    assert sorted(f["ip_address"] for f in port["fixed_ips"]) == ["198.51.100.1", "2001:db8:2::1"]
    with pytest.raises(AdminError) as info:
        await admin.add_router_interface(router["id"], v6["id"])
    assert info.value.status == 409
    router = await admin.remove_router_interface(router["id"], v6["id"])
    assert [i["ip_address"] for i in router["interfaces"]] == ["198.51.100.1"]
    assert [p["id"] for p in await admin.list_ports(device_id=router["id"])] == [port["id"]]
    router = await admin.remove_router_interface(router["id"], v4["id"])
    assert router["interfaces"] == [] and await admin.list_ports(device_id=router["id"]) == []
