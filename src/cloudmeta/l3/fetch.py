"""What the L3 agent reads from the admin API: routers, and which routers a change touches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from cloudmeta.adminclient import AdminClient
from cloudmeta.l3.model import Router, router_from_api

__all__ = [
    "ROUTER_INTERFACE_OWNERS",
    "fetch_router",
    "routers_touched",
]

ROUTER_INTERFACE_OWNERS = frozenset(
    {
        "network:router_interface",
        "network:router_interface_distributed",
        "network:ha_router_replicated_interface",
    }
)


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


async def _get_or_none(coro: Any) -> Any:
    """The answer, or None for a 404 (deleted meanwhile); other errors propagate."""
    try:
        return await coro
    except Exception as exc:
        if _status(exc) == 404:
            return None
        raise


async def fetch_router(client: AdminClient, router_id: str) -> Router | None:
    """The router with its ports' MACs and subnets' prefixes; None when it no longer exists."""
    router = await _get_or_none(client.get_router(router_id))
    if router is None:
        return None
    ports = await client.list_ports(device_id=router_id)
    subnets = []
    for subnet_id in sorted({i["subnet_id"] for i in router["interfaces"]}):
        subnet = await _get_or_none(client.get_subnet(subnet_id))
        if subnet is not None:
            subnets.append(subnet)
    return router_from_api(router, ports, subnets)


def _changes(batch: Any) -> Iterable[Mapping[str, Any]]:
    """The change records of a feed item (a page object, a dict, or a plain list)."""
    if isinstance(batch, Mapping):
        changes = batch.get("changes")
    else:
        changes = getattr(batch, "changes", batch)
    return changes or []


async def routers_touched(client: AdminClient, batch: Any, known: Mapping[str, Router]) -> set[str]:
    """Ids of the routers a batch of changes may affect.

    A router change names its router. A port change names the router that holds the port, or
    (for a new port) the router in its ``device_id`` when it is a router interface. A subnet or
    network change names every known router: a gateway may have moved, and re-reading a
    router is a few GETs that change nothing in its namespace when nothing differs.
    """
    touched: set[str] = set()
    port_owner = {i.port_id: r.id for r in known.values() for i in r.interfaces}
    for change in _changes(batch):
        kind, obj_id = change.get("kind"), str(change.get("id"))
        if kind == "router":
            touched.add(obj_id)
        elif kind == "port":
            if obj_id in port_owner:
                touched.add(port_owner[obj_id])
            elif change.get("op") != "delete":
                port = await _get_or_none(client.get_port(obj_id))
                if port is not None and port.get("device_owner") in ROUTER_INTERFACE_OWNERS:
                    touched.add(str(port["device_id"]))
        elif kind in ("subnet", "network"):
            touched.update(known)
    return touched
