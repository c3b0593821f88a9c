"""Inventory objects as the admin API's JSON (field names as in docs/interfaces.md)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row

from cloudmeta.inventory.models import Keypair, Network, Port, Project, Router, Server, Subnet

__all__ = [
    "addresses_view",
    "keypair_view",
    "network_view",
    "port_view",
    "port_views_of_rows",
    "project_view",
    "router_view",
    "server_view",
    "subnet_view",
    "utc",
]


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def project_view(project: Project) -> dict[str, Any]:
    return {"id": project.id, "name": project.name}


def keypair_view(keypair: Keypair) -> dict[str, Any]:
    return {
        "id": keypair.id,
        "name": keypair.name,
        "project_id": keypair.project_id,
        "public_key": keypair.public_key,
        "fingerprint": keypair.fingerprint,
        "type": keypair.type,
    }


def network_view(network: Network) -> dict[str, Any]:
    return {
        "id": network.id,
        "name": network.name,
        "project_id": network.project_id,
        "mtu": network.mtu,
    }


def subnet_view(subnet: Subnet) -> dict[str, Any]:
    return {
        "id": subnet.id,
        "name": subnet.name,
        "network_id": subnet.network_id,
        "project_id": subnet.project_id,
        "ip_version": subnet.ip_version,
        "cidr": subnet.cidr,
        "gateway_ip": subnet.gateway_ip,
        "allocation_pools": list(subnet.allocation_pools),
        "dns_nameservers": list(subnet.dns_nameservers),
        "host_routes": list(subnet.host_routes),
        "enable_dhcp": subnet.enable_dhcp,
        "ipv6_address_mode": subnet.ipv6_address_mode,
        "ipv6_ra_mode": subnet.ipv6_ra_mode,
    }


def _port_fields(port: Any, fixed_ips: list[dict[str, str]]) -> dict[str, Any]:
    """The port JSON from a Port or a row with the same column names."""
    return {
        "id": port.id,
        "name": port.name,
        "network_id": port.network_id,
        "project_id": port.project_id,
        "mac_address": port.mac_address,
        "fixed_ips": fixed_ips,
        "device_owner": port.device_owner,
        "device_id": port.device_id,
    }


def port_view(port: Port) -> dict[str, Any]:
    return _port_fields(
        port, [{"subnet_id": ip.subnet_id, "ip_address": ip.ip_address} for ip in port.fixed_ips]
    )


def port_views_of_rows(rows: Iterable[Row[Any]]) -> list[dict[str, Any]]:
    """Port JSON from rows of ports outer-joined to fixed IPs (one row per address), in order."""
    views: dict[str, dict[str, Any]] = {}
    for row in rows:
        view = views.get(row.id)
        if view is None:
            view = views[row.id] = _port_fields(row, [])
        if row.ip_address is not None:
            view["fixed_ips"].append({"subnet_id": row.subnet_id, "ip_address": row.ip_address})
    return list(views.values())


def router_view(router: Router) -> dict[str, Any]:
    return {
        "id": router.id,
        "name": router.name,
        "project_id": router.project_id,
        "interfaces": [
            {
                "port_id": port.id,
                "subnet_id": ip.subnet_id,
                "network_id": port.network_id,
                "ip_address": ip.ip_address,
            }
            for port in router.interfaces
            for ip in port.fixed_ips
        ],
    }


def addresses_view(ports: Iterable[Port]) -> dict[str, list[dict[str, Any]]]:
    """Nova's ``addresses``: each network's name -> its fixed IPs, in port then address order.

    Clients written for Nova (and people used to ``openstack server show``) find a server's
    addresses here rather than by following port ids. Two networks of the same name share
    one key, as in Nova.
    """
    addresses: dict[str, list[dict[str, Any]]] = {}
    for port in ports:
        entries = addresses.setdefault(port.network.name, [])
        for ip in port.fixed_ips:
            entries.append(
                {
                    "addr": ip.ip_address,
                    "version": ipaddress.ip_address(ip.ip_address).version,
                    "OS-EXT-IPS-MAC:mac_addr": port.mac_address,
                    "OS-EXT-IPS:type": "fixed",
                }
            )
    return addresses


def server_view(server: Server) -> dict[str, Any]:
    """The server JSON; its ports must be loaded with their fixed IPs and network."""
    return {
        "id": server.id,
        "name": server.name,
        "hostname": server.hostname,
        "project_id": server.project_id,
        "availability_zone": server.availability_zone,
        "flavor": server.flavor,
        "image_id": server.image_id,
        "key_name": server.key_name,
        "user_data": server.user_data,
        "metadata": server.meta,
        "launch_index": server.launch_index,
        "config_drive": server.config_drive,
        "created_at": utc(server.created_at).isoformat(),
        "tags": server.tags,
        "instance_metadata_tags": "enabled" if server.metadata_tags else "disabled",
        "ports": [port.id for port in server.ports],
        "addresses": addresses_view(server.ports),
    }
