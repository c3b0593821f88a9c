"""Request path -> document: Nova's ``lookup`` (normpath, ``ec2`` prefix, version routing).

Pure: the caller hands in the instance and gets back bytes, or a marker for the few answers
that need I/O or keys (password, dynamic vendordata, signed identity).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from enum import StrEnum

from . import ec2, openstack
from .model import Instance, Settings
from .versions import (
    GRIZZLY,
    HAVANA,
    LIBERTY,
    NEWTON_TWO,
    at_least,
    ec2_listing,
    openstack_listing,
    openstack_version,
)

__all__ = [
    "JSON",
    "TEXT",
    "Body",
    "Resolved",
    "Seeded",
    "Special",
    "path_tokens",
    "resolve",
    "root_listing",
]

TEXT = "text/plain; charset=UTF-8"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Body:
    data: bytes
    content_type: str = TEXT


@dataclass(frozen=True, slots=True)
class Seeded:
    """``meta_data.json`` split around its random seed, so each answer gets fresh bytes."""

    head: bytes
    tail: bytes
    content_type: str = JSON

    def render(self, seed_b64: bytes) -> bytes:
        return self.head + seed_b64 + self.tail


class Special(StrEnum):
    PASSWORD = "password"
    VENDOR_DATA2 = "vendor_data2"
    IDENTITY_SIGNATURE = "signature"
    IDENTITY_PKCS7 = "pkcs7"


Resolved = Body | Seeded | Special | None


def path_tokens(path: str) -> list[str]:
    """Normalised tokens, ``ec2`` prepended unless the first is ``ec2`` or ``openstack``.

    ``posixpath.normpath`` keeps ``..`` from climbing above ``/``; leading ``//`` is folded.
    """
    path = posixpath.normpath("/" + path.lstrip("/"))
    tokens = path.split("/")[1:]
    if tokens[0] not in ("ec2", "openstack"):
        tokens = ["ec2"] if tokens[0] == "" else ["ec2", *tokens]
    return tokens


def root_listing() -> Body:
    """``GET /``: the EC2 versions, answered without asking who calls."""
    return Body("\n".join(ec2_listing()).encode())


def resolve(
    instance: Instance, path: str, settings: Settings, address: str | None, today: str
) -> Resolved:
    tokens = path_tokens(path)
    if len(tokens) == 1:
        if tokens[0] == "openstack":
            return Body("\n".join(openstack_listing(today)).encode())
        return root_listing()
    if tokens[0] == "openstack":
        return _openstack(instance, tokens[1:], settings)
    return _ec2(instance, tokens[1:], settings, address)


def _openstack(instance: Instance, tokens: list[str], settings: Settings) -> Resolved:
    if tokens[0] == "content":
        return None  # only injected files (config drive) live there
    version = openstack_version(tokens[0])
    if version is None:
        return None
    if len(tokens) == 1:
        return Body("\n".join(openstack.version_listing(instance, version)).encode())
    name = "/".join(tokens[1:])
    if name == "meta_data.json":
        raw = openstack.dump(openstack.meta_data(instance, version, settings))
        head, sep, tail = raw.partition(openstack.RANDOM_SEED_PLACEHOLDER.encode())
        return Seeded(head, tail) if sep else Body(raw, JSON)
    if name == "user_data":
        return None if instance.user_data is None else Body(instance.user_data)
    if name == "password":
        return Special.PASSWORD if at_least(GRIZZLY, version) else None
    if name == "vendor_data.json":
        data = openstack.vendor_data(settings) if at_least(HAVANA, version) else None
        return None if data is None else Body(openstack.dump(data), JSON)
    if name == "network_data.json" and at_least(LIBERTY, version):
        return Body(openstack.dump(openstack.network_data(instance)))
    if name == "vendor_data2.json" and at_least(NEWTON_TWO, version):
        return Special.VENDOR_DATA2
    return None


def _ec2(
    instance: Instance, tokens: list[str], settings: Settings, address: str | None
) -> Resolved:
    tree = ec2.ec2_tree(instance, tokens[0], settings, address)
    if tree is None:
        return None
    rest = tokens[1:]
    if rest[:2] == ["dynamic", "instance-identity"] and len(rest) == 3 and "dynamic" in tree:
        leaf = rest[2]
        if leaf == "document":
            return Body(ec2.identity_document(instance, settings, address))
        if leaf in ("signature", "pkcs7"):
            return Special(leaf)
        return None
    try:
        node = ec2.find_path_in_tree(tree, rest)
    except KeyError:
        return None
    return Body(ec2.ec2_md_print(node))
