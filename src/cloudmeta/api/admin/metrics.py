"""``GET /metrics`` of the admin API: the process's metrics plus the inventory, read per scrape.

The inventory's size is counted when Prometheus asks (one ``UNION ALL`` of ``COUNT(*)``, no
bookkeeping on the write path), and the store's revision is what every change-feed consumer's
``cloudmeta_change_feed_revision`` is compared with.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, literal, select, union_all

from cloudmeta.inventory import Store
from cloudmeta.inventory.models import Keypair, Network, Port, Project, Router, Server, Subnet
from cloudmeta.metrics import CONTENT_TYPE, render

__all__ = ["inventory_families", "metrics_route"]

# The `kind` label (the change feed's names) -> the model counted.
KINDS = {
    "project": Project,
    "keypair": Keypair,
    "network": Network,
    "subnet": Subnet,
    "router": Router,
    "port": Port,
    "server": Server,
}


async def inventory_families(store: Store) -> list[Metric]:
    """The inventory's objects by kind and its revision, as gauge families."""
    counts = union_all(
        *(
            select(literal(kind).label("kind"), func.count().label("n")).select_from(model)
            for kind, model in KINDS.items()
        )
    )
    async with store.read() as session:
        rows = (await session.execute(counts)).all()
    size = GaugeMetricFamily(
        "cloudmeta_inventory_objects",
        "Objects in the inventory by kind, counted at scrape time.",
        labels=["kind"],
    )
    for kind, count in rows:
        size.add_metric([str(kind)], int(count))
    revision = GaugeMetricFamily(
        "cloudmeta_inventory_revision",
        "The inventory's last committed revision (the change feed's position).",
        value=await store.revision(),
    )
    return [size, revision]


def metrics_route(store: Store) -> web.RouteDef:
    """The route; public like ``/openapi.json`` (counts and timings, no names or secrets)."""

    async def metrics(_: web.Request) -> web.Response:
        body = render(await inventory_families(store))
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    return web.get("/metrics", metrics)
