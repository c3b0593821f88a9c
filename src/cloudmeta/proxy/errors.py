"""The metadata proxy's one exception type."""

from __future__ import annotations

__all__ = ["ProxyError"]


class ProxyError(Exception):
    """A metadata proxy cannot be started or stopped; the message says what to fix."""
