"""The config drive's files: Nova's ``metadata_for_config_drive``, from the API's own builders.

Every file is what the metadata API answers for the same path (through :func:`resolve` and
the same ``openstack``/``ec2`` functions), so a guest reading its drive and a guest asking
169.254.169.254 see one set of documents. What differs is Nova's: no ``password`` (the drive is
read-only), a fresh ``random_seed`` per ``meta_data.json``, and the EC2 side as one
``ec2/<version>/meta-data.json`` (plus ``user-data``) per version instead of a browsable tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from . import openstack
from .ec2 import ec2_tree
from .model import Instance, Settings
from .paths import Body, Seeded, Special, resolve
from .versions import EC2_VERSIONS, LATEST, OPENSTACK_VERSIONS, openstack_version

__all__ = [
    "CONFIG_DRIVE_LABEL",
    "CONFIG_DRIVE_SKIP_VERSIONS",
    "config_drive_files",
]

# The volume label cloud-init's ConfigDrive datasource (and ds-identify) looks for.
CONFIG_DRIVE_LABEL = "config-2"
# Nova's [api] config_drive_skip_versions default: every EC2 version but the newest (2009-04-04)
# is left off; ``latest`` always goes on the drive.
CONFIG_DRIVE_SKIP_VERSIONS: tuple[str, ...] = EC2_VERSIONS[:-1]


def config_drive_files(
    instance: Instance,
    settings: Settings,
    *,
    seed: Callable[[], bytes],
    dynamic_vendordata: Mapping[str, Any] | None = None,
    skip_versions: tuple[str, ...] = CONFIG_DRIVE_SKIP_VERSIONS,
) -> dict[str, bytes]:
    """``{path: bytes}`` of the drive, in Nova's order (EC2 first, then every OpenStack version).

    ``seed`` gives the base64 random seed of one ``meta_data.json`` (called once per version,
    as Nova draws one per lookup); ``dynamic_vendordata`` is what the DynamicJSON targets
    answered (the caller does that I/O), used for ``vendor_data2.json``.
    """
    files: dict[str, bytes] = {}
    for version in (*EC2_VERSIONS, LATEST):
        if version not in skip_versions:
            files.update(_ec2_files(instance, settings, version))
    # Today's date does not matter here: it only filters the /openstack listing.
    for version in (*OPENSTACK_VERSIONS, LATEST):
        dated = openstack_version(version)
        assert dated is not None  # every listed version and latest resolve
        for name in openstack.version_listing(instance, dated):
            path = f"openstack/{version}/{name}"
            data = _render(
                resolve(instance, path, settings, None, ""),
                settings,
                seed,
                dynamic_vendordata or {},
            )
            if data is not None:
                files[path] = data
    return files


def _render(
    found: object,
    settings: Settings,
    seed: Callable[[], bytes],
    dynamic: Mapping[str, Any],
) -> bytes | None:
    if isinstance(found, Body):
        return found.data
    if isinstance(found, Seeded):
        return found.render(seed())
    if found is Special.VENDOR_DATA2:
        return openstack.dump(openstack.vendor_data2(settings, dynamic)[0])
    # The password slot is written by the guest over HTTP: a read-only drive has none. A
    # vendor_data.json without the StaticJSON provider is absent, as it is 404 in the API.
    return None


def _ec2_files(instance: Instance, settings: Settings, version: str) -> dict[str, bytes]:
    tree = ec2_tree(instance, version, settings, None)
    assert tree is not None  # only known versions are asked for
    files: dict[str, bytes] = {}
    if "user-data" in tree:
        files[f"ec2/{version}/user-data"] = tree["user-data"]
    meta = dict(tree["meta-data"])
    if "public-keys" in meta:
        # Nova drops the listing-only "_name" ("0=<key name>") from the JSON form.
        meta["public-keys"] = {
            index: {k: v for k, v in key.items() if k != "_name"}
            for index, key in meta["public-keys"].items()
        }
    files[f"ec2/{version}/meta-data.json"] = openstack.dump(meta)
    return files
