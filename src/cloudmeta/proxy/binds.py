"""Listen addresses of a metadata proxy: parsing ``ADDR:PORT`` / ``[V6%IFACE]:PORT``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

__all__ = ["METADATA_V4_IP", "METADATA_V6_IP", "Bind", "parse_bind"]

METADATA_V4_IP = "169.254.169.254"
METADATA_V6_IP = "fe80::a9fe:a9fe"


@dataclass(frozen=True, slots=True)
class Bind:
    """One listening address; ``interface`` scopes an IPv6 link-local address."""

    host: str
    port: int
    interface: str | None = None

    @property
    def is_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        if self.is_v6:
            zone = f"%{self.interface}" if self.interface else ""
            return f"[{self.host}{zone}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_bind(text: str) -> Bind:
    """``169.254.169.254:80``, ``0.0.0.0:9697`` or ``[fe80::a9fe:a9fe%ns-1]:80``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bind {text!r} is not ADDR:PORT (IPv6 as [ADDR%IFACE]:PORT)")
    interface = None
    if host.startswith("[") and host.endswith("]"):
        host, _, zone = host[1:-1].partition("%")
        interface = zone or None
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ValueError(f"bind {text!r}: {host!r} is not an IP address") from exc
    return Bind(host, int(port), interface)
