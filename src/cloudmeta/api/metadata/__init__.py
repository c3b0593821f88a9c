"""The metadata API (Nova's nova-api-metadata on port 8775)."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from aiohttp import web

from cloudmeta.config import Config
from cloudmeta.inventory import Store

from .app import SERVICE, MetadataService, make_app, serving
from .errors import MetadataError
from .loader import StoreSource
from .source import Loaded, MetadataSource

__all__ = [
    "SERVICE",
    "Loaded",
    "MetadataError",
    "MetadataService",
    "MetadataSource",
    "StoreSource",
    "make_app",
    "make_metadata_app",
    "metadata_server",
    "serving",
]


def make_metadata_app(config: Config, store: Store) -> web.Application:
    """The metadata API over the inventory store (what ``cloudmeta api`` serves on 8775)."""
    return make_app(config, StoreSource(store))


def metadata_server(config: Config, store: Store) -> AbstractAsyncContextManager[web.Server]:
    """The metadata API over the inventory as a low-level server (the fast path)."""
    return serving(config, StoreSource(store))
