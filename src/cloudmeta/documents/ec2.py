"""The EC2 tree (``/<version>/meta-data/...``) and Nova's ``ec2_md_print`` listing rules.

Dated versions are exactly Nova's. ``latest`` adds what AWS serves beyond Nova's last date
(``mac``, ``network/interfaces/macs/<mac>/``, ``dynamic/instance-identity/``, and
``tags/instance/<key>`` for a server with ``instance_metadata_tags`` enabled), so clients that
read those find them while a client that pins ``2009-04-04`` sees Nova's tree byte for byte. The
AWS dates clients pin past 2009-04-04 (``AWS_EXTENDED_VERSIONS``) serve the ``latest`` tree.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from .model import Instance, Settings
from .openstack import hostname
from .versions import AWS_EXTENDED_VERSIONS, EC2_VERSIONS, LATEST, at_least

__all__ = [
    "IDENTITY_PATHS",
    "ec2_id",
    "ec2_md_print",
    "ec2_tree",
    "find_path_in_tree",
    "identity_document",
    "instance_tags",
]

# Leaves under dynamic/instance-identity/ the API fills with signed bytes.
IDENTITY_PATHS = ("document", "signature", "pkcs7")


def ec2_id(prefix: str, uuid: str) -> str:
    """A stable EC2-style id (``i-``/``ami-``/``r-`` + 8 hex) derived from a UUID."""
    if not uuid:
        return ""
    return f"{prefix}-{hashlib.sha256(uuid.encode()).hexdigest()[:8]}"


def _check(required: str, version: str) -> bool:
    return at_least(required, version, EC2_VERSIONS)


def ec2_tree(
    instance: Instance, requested: str, settings: Settings, address: str | None
) -> dict[str, Any] | None:
    """``get_ec2_metadata``: the tree of one version, or None if the version is unknown."""
    extended = requested == LATEST or requested in AWS_EXTENDED_VERSIONS
    version = EC2_VERSIONS[-1] if extended else requested
    if version not in EC2_VERSIONS:
        return None
    fixed = instance.fixed_ips(4)
    host = hostname(instance, settings)
    md: dict[str, Any] = {
        "ami-id": ec2_id("ami", instance.image_id),
        "ami-launch-index": instance.launch_index,
        "ami-manifest-path": "FIXME",
        "instance-id": ec2_id("i", instance.id),
        "hostname": host,
        "local-ipv4": (fixed[0] if fixed else "") or (address or ""),
        "reservation-id": ec2_id("r", instance.id),
        "security-groups": list(instance.security_groups),
    }
    if instance.key_name and instance.keypairs:
        key = instance.keypairs[0]
        md["public-keys"] = {"0": {"_name": f"0={key.name}", "openssh-key": key.public_key}}
    if _check("2007-01-19", version):
        md["local-hostname"] = host
        md["public-hostname"] = host
        md["public-ipv4"] = instance.floating_ips[0] if instance.floating_ips else ""
    if _check("2007-08-29", version):
        md["instance-type"] = instance.flavor
    if _check("2007-12-15", version):
        root = instance.root_device_name
        md["block-device-mapping"] = {"ami": root.removeprefix("/dev/"), "root": root}
    if _check("2008-02-01", version):
        md["placement"] = {"availability-zone": instance.availability_zone}
    if _check("2008-09-01", version):
        md["instance-action"] = "none"
    data: dict[str, Any] = {"meta-data": md}
    if instance.user_data is not None:
        data["user-data"] = instance.user_data
    if extended:
        _extend(instance, md, data)
    return data


def _extend(instance: Instance, md: dict[str, Any], data: dict[str, Any]) -> None:
    macs: dict[str, Any] = {}
    for number, port in enumerate(instance.ports):
        v4 = [ip for ip in port.fixed_ips if ip.subnet.ip_version == 4]
        v6 = [ip for ip in port.fixed_ips if ip.subnet.ip_version == 6]
        entry: dict[str, Any] = {
            "device-number": str(number),
            "interface-id": port.id,
            "local-ipv4s": [ip.ip_address for ip in v4],
            "mac": port.mac_address,
            "owner-id": instance.project_id,
            "vpc-id": port.network.id,
        }
        if v4:
            entry["subnet-id"] = v4[0].subnet.id
            entry["subnet-ipv4-cidr-block"] = v4[0].subnet.cidr
        if v6:
            entry["ipv6s"] = [ip.ip_address for ip in v6]
            entry["subnet-ipv6-cidr-blocks"] = v6[0].subnet.cidr
        macs[port.mac_address] = entry
    if instance.metadata_tags:
        md["tags"] = {"instance": instance_tags(instance)}
    if instance.ports:
        md["mac"] = instance.ports[0].mac_address
        md["network"] = {"interfaces": {"macs": macs}}
    data["dynamic"] = {"instance-identity": {name: name for name in IDENTITY_PATHS}}


def instance_tags(instance: Instance) -> dict[str, str]:
    """AWS's ``meta-data/tags/instance``: tag key -> value. A Nova tag is a bare string, so
    each is a key with an empty value. "." and ".." name no path and are left out, as AWS
    refuses them as keys when metadata tags are on (tags never hold "/": rules.check_tags)."""
    return {tag: "" for tag in instance.tags if tag not in (".", "..")}


def identity_document(instance: Instance, settings: Settings, address: str | None) -> bytes:
    """The AWS instance-identity document (AWS's ``"key" : value`` layout)."""
    fixed = instance.fixed_ips(4)
    created = instance.created_at or datetime.fromtimestamp(0, UTC)
    doc = {
        "accountId": instance.project_id,
        "architecture": "x86_64",
        "availabilityZone": instance.availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": ec2_id("ami", instance.image_id),
        "instanceId": ec2_id("i", instance.id),
        "instanceType": instance.flavor,
        "kernelId": None,
        "pendingTime": created.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "privateIp": (fixed[0] if fixed else "") or (address or ""),
        "ramdiskId": None,
        "region": settings.region,
        "uuid": instance.id,
        "version": "2017-09-30",
    }
    return json.dumps(doc, indent=2, separators=(",", " : ")).encode()


def find_path_in_tree(data: Any, tokens: list[str]) -> Any:
    """Nova's walk down a dict tree; a missing key (or a token below a leaf) is KeyError."""
    for i, token in enumerate(tokens):
        if isinstance(data, dict) and token in data:
            data = data[token]
        else:
            raise KeyError("/".join(tokens[:i]))
    return data


def ec2_md_print(data: Any) -> bytes:
    """Render a node: sorted keys, ``key/`` for subtrees (or their ``_name``), lists by line."""
    if isinstance(data, dict):
        lines = []
        for key in sorted(data):
            if key == "_name":
                continue
            value = data[key]
            if isinstance(value, dict):
                lines.append(str(value["_name"]) if "_name" in value else f"{key}/")
            else:
                lines.append(key)
        return "\n".join(lines).encode()
    if isinstance(data, list):
        return "\n".join(str(item) for item in data).encode()
    if isinstance(data, bytes):
        return data
    if data is None:
        return b"None"
    return str(data).encode()
