"""Unique ``cmt-<hex>`` names for one test, and everything made under them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from cloudmeta import linux


@dataclass
class Scratch:
    """Names made by one test; everything listed here is deleted after it."""

    tag: str = field(default_factory=lambda: f"cmt-{secrets.token_hex(3)}")
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)

    def namespace(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        linux.create_namespace(name)
        self.namespaces.append(name)
        return name

    def link(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        assert len(name) <= 15
        self.host_links.append(name)
        return name
