"""The OpenStack tree: ``meta_data.json``, ``network_data.json``, ``vendor_data*.json``.

Field order, presence rules and JSON spacing follow nova/api/metadata/base.py and
nova/virt/netutils.py, so a document is byte-for-byte what Nova would serve (bar the random seed).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from .model import Device, Instance, Port, Settings, Subnet
from .versions import (
    EPOXY,
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_ONE,
    NEWTON_TWO,
    OCATA,
    ROCKY,
    VICTORIA,
    at_least,
)

__all__ = [
    "LEGACY_EXPOSED_VIF_TYPES",
    "RANDOM_SEED_PLACEHOLDER",
    "dump",
    "hostname",
    "meta_data",
    "network_data",
    "vendor_data",
    "vendor_data2",
    "version_listing",
]

MD_JSON_NAME = "meta_data.json"
VD_JSON_NAME = "vendor_data.json"
VD2_JSON_NAME = "vendor_data2.json"
NW_JSON_NAME = "network_data.json"
UD_NAME = "user_data"
PASS_NAME = "password"

LEGACY_EXPOSED_VIF_TYPES = frozenset(
    {"bridge", "dvs", "hw_veb", "hyperv", "ovs", "tap", "vhostuser", "vif"}
)
_BUSES = frozenset({"pci", "usb", "scsi", "ide", "xen", "none"})
# Stands for the 512 random bytes Nova draws per request; the API splices fresh ones in.
RANDOM_SEED_PLACEHOLDER = "@@cloudmeta-random-seed@@"


def dump(data: Any) -> bytes:
    """oslo's ``jsonutils.dump_as_bytes``: json.dumps defaults, insertion order kept."""
    return json.dumps(data).encode()


def hostname(instance: Instance, settings: Settings) -> str:
    if settings.dhcp_domain:
        return f"{instance.hostname}.{settings.dhcp_domain}"
    return instance.hostname


def version_listing(instance: Instance, version: str) -> list[str]:
    """``/openstack/<version>``: the files that version has, in Nova's order."""
    names = [MD_JSON_NAME]
    if instance.user_data is not None:
        names.append(UD_NAME)
    if at_least(GRIZZLY, version):
        names.append(PASS_NAME)
    if at_least(HAVANA, version):
        names.append(VD_JSON_NAME)
    if at_least(LIBERTY, version):
        names.append(NW_JSON_NAME)
    if at_least(NEWTON_TWO, version):
        names.append(VD2_JSON_NAME)
    return names


def meta_data(instance: Instance, version: str, settings: Settings) -> dict[str, Any]:
    """``meta_data.json`` as a dict; ``random_seed`` holds :data:`RANDOM_SEED_PLACEHOLDER`."""
    data: dict[str, Any] = {"uuid": instance.id}
    if instance.metadata:
        data["meta"] = dict(instance.metadata)
    if instance.key_name and instance.keypairs:
        first = instance.keypairs[0]
        data["public_keys"] = {first.name: first.public_key}
        data["keys"] = [
            {"name": key.name, "type": key.type, "data": key.public_key}
            for key in instance.keypairs
        ]
    data["hostname"] = hostname(instance, settings)
    data["name"] = instance.name
    data["launch_index"] = instance.launch_index
    data["availability_zone"] = instance.availability_zone
    if at_least(GRIZZLY, version):
        data["random_seed"] = RANDOM_SEED_PLACEHOLDER
    if at_least(LIBERTY, version):
        data["project_id"] = instance.project_id
    if at_least(NEWTON_ONE, version):
        data["devices"] = _devices(instance.devices, version)
    if at_least(VICTORIA, version):
        data["dedicated_cpus"] = sorted(instance.dedicated_cpus)
    return data


def _devices(devices: tuple[Device, ...], version: str) -> list[dict[str, Any]]:
    """Nova's ``_get_device_metadata``: unknown buses and untagged plain NICs are skipped."""
    out: list[dict[str, Any]] = []
    for dev in devices:
        if dev.bus not in _BUSES:
            continue
        entry: dict[str, Any] = {"bus": dev.bus, "address": dev.address}
        if dev.tags:
            entry["tags"] = list(dev.tags)
        if dev.type == "nic":
            entry["type"] = "nic"
            entry["mac"] = dev.mac
            if at_least(OCATA, version) and dev.vlan:
                entry["vlan"] = dev.vlan
            if at_least(ROCKY, version):
                entry["vf_trusted"] = bool(dev.vf_trusted)
            if "tags" not in entry and "vlan" not in entry and "vf_trusted" not in entry:
                continue
        elif dev.type == "disk":
            entry["type"] = "disk"
            if dev.serial:
                entry["serial"] = dev.serial
            if dev.path:
                entry["path"] = dev.path
        elif dev.type == "share" and at_least(EPOXY, version):
            entry["type"] = "share"
            entry["share_id"] = dev.share_id
            entry["tag"] = dev.tag
        else:
            continue
        out.append(entry)
    return out


def network_data(instance: Instance) -> dict[str, Any]:
    """nova.virt.netutils.get_network_metadata; ``{}`` for an instance without ports."""
    if not instance.ports:
        return {}
    links: list[dict[str, Any]] = []
    nets: list[dict[str, Any]] = []
    services: list[dict[str, str]] = []
    ifc_num = -1
    net_num = -1
    for port in instance.ports:
        subnets = _port_subnets(port)
        if not subnets:
            continue
        first = {v: next((s for s in subnets if s.ip_version == v), None) for v in (4, 6)}
        ifc_num += 1
        if first[4] is None and first[6] is None:
            continue
        link = _link(port, subnets, ifc_num)
        links.append(link)
        for version in (4, 6):
            subnet = first[version]
            if subnet is None:
                continue
            ips = [ip.ip_address for ip in port.fixed_ips if ip.subnet.id == subnet.id]
            net_num += 1
            nets.append(_net(port, subnet, ips[0], version, net_num, link["id"]))
            services += [dns for dns in _dns(subnet) if dns not in services]
    return {"links": links, "networks": nets, "services": services}


def _port_subnets(port: Port) -> list[Subnet]:
    seen: dict[str, Subnet] = {}
    for ip in port.fixed_ips:
        seen.setdefault(ip.subnet.id, ip.subnet)
    return list(seen.values())


def _link(port: Port, subnets: list[Subnet], ifc_num: int) -> dict[str, Any]:
    mtu = None if any(s.dhcp_server for s in subnets) else port.network.mtu
    return {
        "id": port.link_name if port.id else f"interface{ifc_num}",
        "vif_id": port.id,
        "type": port.vif_type if port.vif_type in LEGACY_EXPOSED_VIF_TYPES else "phy",
        "mtu": mtu,
        "ethernet_mac_address": port.mac_address,
    }


def _net(
    port: Port, subnet: Subnet, address: str, version: int, net_num: int, link_id: str
) -> dict[str, Any]:
    net_type = ""
    if subnet.ipv6_address_mode is not None:
        net_type = f"_{subnet.ipv6_address_mode}"
    elif subnet.dhcp_server is not None:
        return {
            "id": f"network{net_num}",
            "type": f"ipv{version}_dhcp",
            "link": link_id,
            "network_id": port.network.id,
        }
    cidr = ipaddress.ip_network(subnet.cidr, strict=False)
    routes: list[dict[str, str]] = []
    if subnet.gateway_ip:
        any_addr = "0.0.0.0" if version == 4 else "::"
        routes.append({"network": any_addr, "netmask": any_addr, "gateway": subnet.gateway_ip})
    for route in subnet.host_routes:
        dest = ipaddress.ip_network(route.destination, strict=False)
        routes.append(
            {
                "network": str(dest.network_address),
                "netmask": str(dest.netmask),
                "gateway": route.nexthop,
            }
        )
    return {
        "id": f"network{net_num}",
        "type": f"ipv{version}{net_type}",
        "link": link_id,
        "ip_address": address,
        "netmask": str(cidr.netmask),
        "routes": routes,
        "network_id": port.network.id,
        "services": _dns(subnet),
    }


def _dns(subnet: Subnet) -> list[dict[str, str]]:
    return [{"type": "dns", "address": ip} for ip in subnet.dns_nameservers]


def vendor_data(settings: Settings) -> dict[str, Any] | None:
    """``vendor_data.json``: the StaticJSON dict, or None (404) without that provider."""
    if "StaticJSON" not in settings.vendordata_providers:
        return None
    return dict(settings.static_vendordata)


def vendor_data2(
    settings: Settings, dynamic: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``vendor_data2.json`` in provider order, and the duplicate keys Nova drops with a warning."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for provider in settings.vendordata_providers:
        if provider == "StaticJSON":
            out["static"] = dict(settings.static_vendordata)
        elif provider == "DynamicJSON":
            for key, value in dynamic.items():
                if key in out:
                    dropped.append(key)
                    continue
                out[key] = value
    return out, dropped
