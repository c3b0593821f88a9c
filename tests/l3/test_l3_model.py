"""The router model built from admin API JSON, and the names it gets (pure, no root)."""

from __future__ import annotations

import ipaddress

import pytest

from cloudmeta.l3.model import (
    L3Error,
    interface_name,
    interface_prefix,
    router_from_api,
    router_namespace,
)
from cloudmeta.linux.errors import LinuxError

PORT_A = "1b2c3d4e-5f60-4718-9a0b-c1d2e3f40516"
PORT_B = "0a9b8c7d-6e5f-4a3b-8c1d-0e1f2a3b4c5d"
NET_A, NET_B = "net-a", "net-b"


def _api() -> tuple[dict[str, object], list[dict[str, object]], list[dict[str, object]]]:
    router = {
        "id": "r1",
        "name": "router",
        "project_id": "p",
        "interfaces": [
            {"port_id": PORT_A, "subnet_id": "sa", "network_id": NET_A, "ip_address": "192.0.2.1"},
            {"port_id": PORT_B, "subnet_id": "sb", "network_id": NET_B, "ip_address": None},
        ],
    }
    ports = [
        {"id": PORT_A, "mac_address": "FA:16:3E:00:00:01"},
        {"id": PORT_B, "mac_address": "fa:16:3e:00:00:02"},
    ]
    subnets = [
        {"id": "sa", "cidr": "192.0.2.0/25", "gateway_ip": "192.0.2.1"},
        {"id": "sb", "cidr": "198.51.100.0/24", "gateway_ip": "198.51.100.1"},
    ]
    return router, ports, subnets


def test_names_follow_neutron_with_prefixes() -> None:
    assert router_namespace("cmt-", "r1") == "cmt-qrouter-r1"
    assert router_namespace("", "r1") == "qrouter-r1"
    assert interface_name("", PORT_A) == "qr-" + PORT_A[:11]
    assert interface_name("cmt-", PORT_A) == "cmt-qr-" + PORT_A[:8]
    assert len(interface_name("cmt-", PORT_A)) == 15
    assert interface_name("cmt-", PORT_A).startswith(interface_prefix("cmt-"))


def test_too_long_device_prefix_is_refused_with_advice() -> None:
    with pytest.raises(LinuxError, match="shorten the device prefix"):
        interface_name("cloudmeta-", PORT_A)
    assert len(interface_name("abcdef", PORT_A)) == 15


def test_router_from_api_joins_ports_and_subnets_sorted_by_port() -> None:
    router = router_from_api(*_api())
    assert router.id == "r1"
    assert [i.port_id for i in router.interfaces] == [PORT_B, PORT_A]
    b, a = router.interfaces
    assert a.addresses == (ipaddress.ip_interface("192.0.2.1/25"),)
    assert a.mac_address == "fa:16:3e:00:00:01" and a.network_id == NET_A
    # ip_address missing: the subnet's gateway is the router's address.
    assert b.addresses == (ipaddress.ip_interface("198.51.100.1/24"),)


def test_interfaces_without_port_subnet_or_gateway_are_left_out() -> None:
    router, ports, subnets = _api()
    subnets[1]["gateway_ip"] = None
    assert [i.port_id for i in router_from_api(router, ports, subnets).interfaces] == [PORT_A]
    assert router_from_api(router, ports[1:], subnets).interfaces == ()


def test_one_port_on_two_subnets_is_one_interface_with_two_addresses() -> None:
    router, ports, subnets = _api()
    router["interfaces"] = [
        {"port_id": PORT_A, "subnet_id": "sa", "network_id": NET_A, "ip_address": "192.0.2.1"},
        {"port_id": PORT_A, "subnet_id": "sc", "network_id": NET_A, "ip_address": "192.0.2.129"},
    ]
    subnets.append({"id": "sc", "cidr": "192.0.2.128/25", "gateway_ip": "192.0.2.129"})
    (only,) = router_from_api(router, ports, subnets).interfaces
    assert [str(a) for a in only.addresses] == ["192.0.2.1/25", "192.0.2.129/25"]


def test_malformed_answer_names_the_missing_field() -> None:
    with pytest.raises(L3Error, match="without 'interfaces'"):
        router_from_api({"id": "r"}, [], [])
