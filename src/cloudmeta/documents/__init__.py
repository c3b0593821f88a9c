"""Pure metadata document builders: inventory records in, Nova's bytes out. No I/O here."""

from __future__ import annotations

from .configdrive import CONFIG_DRIVE_LABEL, CONFIG_DRIVE_SKIP_VERSIONS, config_drive_files
from .ec2 import ec2_id, ec2_md_print, ec2_tree, identity_document
from .model import Device, FixedIp, Instance, Keypair, Network, Port, Route, Settings, Subnet
from .openstack import meta_data, network_data, vendor_data, vendor_data2
from .paths import JSON, TEXT, Body, Resolved, Seeded, Special, path_tokens, resolve, root_listing
from .versions import EC2_VERSIONS, OPENSTACK_VERSIONS

__all__ = [
    "CONFIG_DRIVE_LABEL",
    "CONFIG_DRIVE_SKIP_VERSIONS",
    "EC2_VERSIONS",
    "JSON",
    "OPENSTACK_VERSIONS",
    "TEXT",
    "Body",
    "Device",
    "FixedIp",
    "Instance",
    "Keypair",
    "Network",
    "Port",
    "Resolved",
    "Route",
    "Seeded",
    "Settings",
    "Special",
    "Subnet",
    "config_drive_files",
    "ec2_id",
    "ec2_md_print",
    "ec2_tree",
    "identity_document",
    "meta_data",
    "network_data",
    "path_tokens",
    "resolve",
    "root_listing",
    "vendor_data",
    "vendor_data2",
]
