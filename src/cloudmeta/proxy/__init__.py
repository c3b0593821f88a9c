"""The metadata proxy in its three modes, behind :class:`MetadataProxyManager`."""

from cloudmeta.proxy.errors import ProxyError
from cloudmeta.proxy.headers import ProxyTarget
from cloudmeta.proxy.manager import MetadataProxyManager

__all__ = ["MetadataProxyManager", "ProxyError", "ProxyTarget"]
