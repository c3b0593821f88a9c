"""The metadata API (Nova's nova-api-metadata on port 8775)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from cloudmeta.config import Config
from cloudmeta.http import QuietServer
from cloudmeta.inventory import Store

from .app import MetadataService, serving
from .errors import MetadataError
from .loader import StoreSource
from .source import Loaded, MetadataSource

__all__ = [
    "Loaded",
    "MetadataError",
    "MetadataService",
    "MetadataSource",
    "StoreSource",
    "metadata_server",
    "serving",
]


def metadata_server(config: Config, store: Store) -> AbstractAsyncContextManager[QuietServer]:
    """The metadata API over the inventory (what ``cloudmeta api`` serves on 8775)."""
    return serving(config, StoreSource(store))
