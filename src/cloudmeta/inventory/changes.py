"""Change records: which object changed at which revision, and what else the change touches.

``touches`` lets a cache drop only the entries a change can affect instead of everything: a
new port names its network, device, owner, MAC and addresses, so the metadata agent drops the
lookups for that (network, address) and the metadata API drops that device's documents. Every
list holds the union of the old and the new values (an update that takes an address away names
it too). ``touches`` is None only for records written before migration 0003: such a change
could concern anyone, and consumers then fall back to dropping everything of its kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cloudmeta.inventory.models import Port

__all__ = ["TOUCH_FIELDS", "ChangeRecord", "Touches", "merge_touches", "port_touches", "touches"]

# Field -> a list of ids or values (strings), each present only when the change has any.
Touches = dict[str, list[str]]
TOUCH_FIELDS = (
    "network_ids",
    "subnet_ids",
    "port_ids",
    "device_ids",
    "device_owners",
    "mac_addresses",
    "ip_addresses",
    "project_ids",
    "names",
    "router_ids",
)


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    revision: int
    kind: str
    id: str
    op: str
    touches: Touches | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = {
            "revision": self.revision,
            "kind": self.kind,
            "id": self.id,
            "op": self.op,
        }
        if self.touches is not None:
            found["touches"] = self.touches
        return found


def touches(**values: Iterable[str | None]) -> Touches:
    """Build a :data:`Touches` from iterables, dropping Nones, duplicates and empty fields."""
    found: Touches = {}
    for name, items in values.items():
        if name not in TOUCH_FIELDS:
            raise ValueError(f"unknown touches field {name!r}")
        listed = sorted({item for item in items if item})
        if listed:
            found[name] = listed
    return found


def merge_touches(*many: Mapping[str, Iterable[str]]) -> Touches:
    """The union of several :data:`Touches` (a server's ports, old and new values)."""
    merged: dict[str, set[str]] = {}
    for one in many:
        for name, items in one.items():
            merged.setdefault(name, set()).update(items)
    return {name: sorted(items) for name, items in merged.items() if items}


def port_touches(port: Port, *, extra_ips: Iterable[str] = ()) -> Touches:
    """What a port change touches; ``port.fixed_ips`` must be loaded (or just assigned)."""
    ips = [ip.ip_address for ip in port.fixed_ips]
    return touches(
        network_ids=[port.network_id],
        subnet_ids=[ip.subnet_id for ip in port.fixed_ips],
        device_ids=[port.device_id],
        device_owners=[port.device_owner],
        mac_addresses=[port.mac_address],
        ip_addresses=[*ips, *extra_ips],
    )
