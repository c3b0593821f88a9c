"""The isolation attacks as raw HTTP requests: pure, so the list is the same in every mode.

An attacker instance sends identity headers naming a victim (another instance, its network,
router, project, a valid signature of it, its session token) in every shape a parser may treat
differently: single, repeated, mixed case, folded (obs-fold), comma-joined, underscored.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PATHS", "Victim", "families"]

PATHS = (
    "/openstack/latest/meta_data.json",
    "/latest/meta-data/instance-id",
    "/openstack/2013-04-04/password",
    "/latest/meta-data/hostname",
)


@dataclass(frozen=True)
class Victim:
    server_id: str
    project_id: str
    network_id: str
    ip: str
    signature: str  # a VALID signature of server_id: the strongest forgery there is
    token: str  # a valid session token issued to the victim
    expired_token: str  # the victim's token, valid MAC, expired
    router_id: str = ""


def _raw(path: str, lines: list[str], method: str = "GET") -> str:
    head = [f"{method} {path} HTTP/1.1", "Host: 169.254.169.254", "Connection: close", *lines]
    return "\r\n".join(head) + "\r\n\r\n"


def _identity(v: Victim, case: str = "title") -> list[str]:
    names = ["X-Instance-ID", "X-Instance-ID-Signature", "X-Tenant-ID"]
    if case == "mixed":
        names = ["x-iNsTaNcE-iD", "X-INSTANCE-ID-signature", "x-tEnAnT-Id"]
    elif case == "underscore":
        names = ["X_Instance_ID", "X_Instance_ID_Signature", "X_Tenant_ID"]
    values = [v.server_id, v.signature, v.project_id]
    return [f"{name}: {value}" for name, value in zip(names, values, strict=True)]


def families(v: Victim, own_ip: str) -> dict[str, list[str]]:
    """Attack name -> raw requests (each over every path in PATHS)."""
    shapes: dict[str, list[str]] = {
        "xff-single": [f"X-Forwarded-For: {v.ip}"],
        "xff-repeated": [f"X-Forwarded-For: {v.ip}", f"X-Forwarded-For: {v.ip}"],
        "xff-commas": [f"X-Forwarded-For: {v.ip}, {own_ip}, {v.ip}"],
        "network-id": [f"X-Neutron-Network-ID: {v.network_id}"],
        "network-id-mixed-repeated": [
            f"x-neutron-NETWORK-id: {v.network_id}",
            f"X-Neutron-Network-Id: {v.network_id},{v.network_id}",
        ],
        "router-id": [f"X-Neutron-Router-ID: {v.router_id or v.network_id}"],
        "instance-signed": _identity(v),
        "instance-mixed-case": _identity(v, "mixed"),
        "instance-underscore": _identity(v, "underscore"),
        "instance-repeated": _identity(v) + _identity(v),
        "instance-commas": [
            f"X-Instance-ID: {v.server_id}, {v.server_id}",
            f"X-Instance-ID-Signature: {v.signature},{v.signature}",
            f"X-Tenant-ID: {v.project_id}, {v.project_id}",
        ],
        "instance-folded": [
            "X-Instance-ID: cmt",
            f" {v.server_id}",
            "X-Tenant-ID: cmt",
            f"\t{v.project_id}",
            f"X-Instance-ID-Signature: {v.signature}",
        ],
        "everything": [
            f"X-Forwarded-For: {v.ip}",
            f"X-Neutron-Network-ID: {v.network_id}",
            f"X-Neutron-Router-ID: {v.router_id or v.network_id}",
            *_identity(v),
        ],
        "token-replayed": [f"X-aws-ec2-metadata-token: {v.token}"],
        "token-expired": [f"X-aws-ec2-metadata-token: {v.expired_token}"],
        "token-forged": [f"X-aws-ec2-metadata-token: {v.token[:-4]}AAAA"],
    }
    return {name: [_raw(path, lines) for path in PATHS] for name, lines in shapes.items()}
