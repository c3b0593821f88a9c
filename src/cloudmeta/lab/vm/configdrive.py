"""A server's config drive, as nova-compute makes it: read the inventory, write the ISO.

The hypervisor's side of the lab, like plugging a port: the documents come from the metadata
API's own loader and builders (:func:`~cloudmeta.documents.config_drive_files`), so the drive
holds what 169.254.169.254 would answer, at the moment the drive is built.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from cloudmeta.api.metadata.loader import StoreSource
from cloudmeta.api.metadata.settings import document_settings
from cloudmeta.api.metadata.source import MetadataSource
from cloudmeta.api.metadata.vendordata import DynamicVendordata
from cloudmeta.config import Config
from cloudmeta.documents import CONFIG_DRIVE_LABEL, Instance, config_drive_files
from cloudmeta.inventory import Store
from cloudmeta.lab.errors import LabError
from cloudmeta.lab.state import lab_dir
from cloudmeta.linux.iso import write_iso

__all__ = ["build_config_drive", "config_drive_for", "config_drive_required", "drive_path"]


def drive_path(config: Config, name: str) -> Path:
    """Where a lab instance's drive lives: beside its directory, which QEMU's start makes."""
    return lab_dir(config) / "instances" / f"{name}.config-drive.iso"


def config_drive_required(config: Config, server: Mapping[str, Any]) -> bool:
    """Nova's ``configdrive.required_by``: the server asked for one, or ``force_config_drive``."""
    return bool(server.get("config_drive")) or config.force_config_drive


def _seed() -> bytes:
    # Nova's random_seed: 512 fresh bytes per meta_data.json.
    return base64.b64encode(os.urandom(512))


async def _load(config: Config, server_id: str, source: MetadataSource | None) -> Instance:
    if source is not None:
        loaded = await source.load(server_id)
    else:
        store = await Store.open(config, migrate=False)
        try:
            loaded = await StoreSource(store).load(server_id)
        except SQLAlchemyError as exc:
            # The lab reads the database its all-in-one serves; a cloud run elsewhere has
            # its own, which this state_path does not name.
            where = config.masked()["database"]["connection"] or str(config.state_path)
            raise LabError(
                f"cannot read server {server_id} from the inventory ({where}): {exc}; "
                "the config drive is built on the host whose database holds the server"
            ) from exc
        finally:
            await store.close()
    if loaded is None:
        raise LabError(f"server {server_id}: not in the inventory; no config drive to build")
    return loaded.instance


async def build_config_drive(
    config: Config, server_id: str, dest: Path, *, source: MetadataSource | None = None
) -> Path:
    """Write ``server_id``'s config drive (ISO 9660, label ``config-2``) at ``dest``.

    ``source`` defaults to the inventory ``config`` names (the all-in-one's database);
    DynamicJSON vendordata targets are asked once, as the metadata API would be.
    """
    instance = await _load(config, server_id, source)
    api = config.api
    dynamic = DynamicVendordata(
        api.vendordata_dynamic_targets,
        api.vendordata_dynamic_connect_timeout,
        api.vendordata_dynamic_read_timeout,
    )
    try:
        answers = await dynamic.fetch(instance)
    finally:
        await dynamic.close()
    files = config_drive_files(
        instance,
        document_settings(config),
        seed=_seed,
        dynamic_vendordata=answers,
        skip_versions=tuple(api.config_drive_skip_versions),
    )
    return await write_iso(files, dest, volume_id=CONFIG_DRIVE_LABEL)


async def config_drive_for(config: Config, server: Mapping[str, Any], dest: Path) -> Path | None:
    """The boot's hook: the drive at ``dest`` when the server needs one, else None."""
    if not config_drive_required(config, server):
        return None
    return await build_config_drive(config, str(server["id"]), dest)
