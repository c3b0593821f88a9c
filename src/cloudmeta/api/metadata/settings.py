"""The document builders' deployment settings, read from the configuration once."""

from __future__ import annotations

from cloudmeta.config import Config
from cloudmeta.documents import Settings

from .vendordata import load_static

__all__ = ["document_settings"]


def document_settings(config: Config) -> Settings:
    """Nova's ``[api]`` options the documents need; a bad vendordata file fails here, early."""
    api = config.api
    return Settings(
        dhcp_domain=api.dhcp_domain,
        vendordata_providers=tuple(api.vendordata_providers),
        static_vendordata=load_static(api.vendordata_jsonfile_path),
    )
