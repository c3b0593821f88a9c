"""The metadata API (Nova's nova-api-metadata on port 8775)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import cast

from cloudmeta.config import Config
from cloudmeta.http import QuietServer
from cloudmeta.inventory import Store
from cloudmeta.signing import LocalMetadataApi

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
    "local_api",
    "metadata_server",
    "serving",
]


def metadata_server(config: Config, store: Store) -> AbstractAsyncContextManager[QuietServer]:
    """The metadata API over the inventory (what ``cloudmeta api`` serves on 8775)."""
    return serving(config, StoreSource(store))


def local_api(server: QuietServer) -> LocalMetadataApi:
    """The handler of a :func:`serving` server as the agent of the same process calls it:
    with the identity it found. (Its ``request_handler`` is :meth:`MetadataService.handle`
    under :func:`cloudmeta.metrics.instrument`, which passes the identity through.)"""
    return cast(LocalMetadataApi, server.request_handler)
