"""Unique ``cmt-<hex>`` names for one test, and everything made under them."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from cloudmeta import linux


@dataclass
class Scratch:
    """Names made by one test; the fixture hands them all to ``linux.cleanup`` afterwards."""

    pid_dir: Path
    tag: str = field(default_factory=lambda: f"cmt-{secrets.token_hex(3)}")
    namespaces: list[str] = field(default_factory=list)
    host_links: list[str] = field(default_factory=list)

    def namespace(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        self.namespaces.append(name)
        linux.create_namespace(name)
        return name

    def link(self, suffix: str) -> str:
        name = f"{self.tag}-{suffix}"
        assert len(name) <= 15
        if name not in self.host_links:
            self.host_links.append(name)
        return name

    async def clean(self) -> None:
        await linux.cleanup(namespaces=self.namespaces, links=self.host_links, pid_dir=self.pid_dir)
