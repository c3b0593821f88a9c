"""Scenario ``scale-<db>-<ports|meta>-<n>``: the agent's port lookup (``GET /v1/ports?
ip_address=&network_id=`` on the admin API) and ``meta_data.json`` p99 with n ports in the
inventory, on SQLite and on PostgreSQL (a fresh ``cmt_bench_<hex>`` database, dropped after).

The ports beyond the first server's are bulk-inserted straight through SQLAlchemy (an IPv6
subnet of the same network, so the lookup has to find one address among all of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.common import (
    ADMIN_TOKEN,
    META_PATH,
    Row,
    Settings,
    cpu_seconds,
    lua_headers,
    median_row,
    process_tree,
    wrk,
)
from bench.services import Api, config_of, signed_headers, small_inventory, start_api

PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = "postgresql://postgres@127.0.0.1:5432/{name}"
BULK_SUBNET = "2001:db8:5ca1::/64"
BATCH = 5000
# Few connections: the figure is the cost of one lookup at n ports, not the queue behind it.
SCALE_CONNECTIONS = 8
SCALE_ROUNDS = 3  # per size and target, alternating ports and meta; the median p99 is kept


@contextlib.asynccontextmanager
async def database(kind: str) -> AsyncIterator[str]:
    """The ``[database] connection`` for ``kind``: SQLite's default file, or a fresh PG db."""
    if kind == "sqlite":
        yield ""
        return
    import asyncpg

    name = f"cmt_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_ADMIN_DSN, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield PG_URL.format(name=name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run(settings: Settings, tmp: Path) -> list[Row]:
    rows: list[Row] = []
    for kind in ("sqlite", "postgresql"):
        async with database(kind) as url:
            api = await start_api(tmp / kind, database=url)
            try:
                rows += await _backend(settings, tmp, kind, api)
            finally:
                await api.close()
    return rows


async def _backend(settings: Settings, tmp: Path, kind: str, api: Api) -> list[Row]:
    from cloudmeta.inventory import Store

    server, project_id, network_id, ip = await small_inventory(api, 1)
    bulk = await api.client.create_subnet(network_id, BULK_SUBNET, project_id=project_id)
    meta_lua = lua_headers(tmp / f"{kind}-meta.lua", signed_headers(server["id"], project_id, ip))
    ports_lua = lua_headers(tmp / f"{kind}-ports.lua", {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    lookup = f"{api.admin_url}/v1/ports?ip_address={ip}&network_id={network_id}"
    meta = f"{api.metadata_url}{META_PATH}"
    store = await Store.open(config_of(api.options), migrate=False)
    rows: list[Row] = []
    have = 1
    try:
        for size in settings.scale_sizes:
            await _insert_ports(store, project_id, network_id, bulk["id"], have, size)
            have = size
            targets = (("ports", lookup, ports_lua), ("meta", meta, meta_lua))
            for _what, url, script in targets:
                await wrk(url, 1, script=script)
            pids = process_tree(api.service.proc.pid) if api.service.proc else []
            rounds: dict[str, list[dict[str, float]]] = {what: [] for what, _, _ in targets}
            spent = dict.fromkeys(rounds, 0.0)
            for _ in range(1 if settings.quick else SCALE_ROUNDS):
                for what, url, script in targets:  # ports and meta alternate within a size
                    before = cpu_seconds(pids)
                    rounds[what].append(await wrk(url, settings.scale_duration, script=script,
                                                  connections=SCALE_CONNECTIONS))  # fmt: skip
                    spent[what] += cpu_seconds(pids) - before
            for what, figures in rounds.items():
                rows.append(median_row(f"scale-{kind}-{what}-{size}", figures,
                                       settings.scale_duration, spent=spent[what],
                                       ports=size))  # fmt: skip
    finally:
        await store.close()
    return rows


async def _insert_ports(
    store: Any, project_id: str, network_id: str, subnet_id: str, start: int, stop: int
) -> None:
    """Ports ``start`` .. ``stop - 1`` with one address each on the bulk subnet."""
    from sqlalchemy import insert

    from cloudmeta.inventory.models import FixedIP, Port

    for low in range(start, stop, BATCH):
        ports: list[dict[str, Any]] = []
        ips: list[dict[str, Any]] = []
        for n in range(low, min(stop, low + BATCH)):
            port_id = str(uuid.uuid4())
            mac = "fa:16:3f:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (16, 8, 0))
            ports.append(
                {"id": port_id, "name": "", "network_id": network_id, "project_id": project_id,
                 "mac_address": mac, "device_owner": "compute:bench", "device_id": ""}
            )  # fmt: skip
            ips.append(
                {"port_id": port_id, "subnet_id": subnet_id, "network_id": network_id,
                 "ip_address": f"2001:db8:5ca1::{n:x}"}
            )  # fmt: skip
        async with store.engine.begin() as conn:
            await conn.execute(insert(Port.__table__), ports)
            await conn.execute(insert(FixedIP.__table__), ips)
    await asyncio.sleep(0)


AB_SIZES = (100, 100_000)
AB_ROUNDS = "ABBAABBA"  # 8 rounds of scale_duration, alternating: the machine's load hits both


async def run_ab(settings: Settings, tmp: Path) -> list[Row]:
    """``--only scale-ab``: ``meta_data.json`` and the port lookup p99 at 100 and at 100 000
    ports, measured in alternating rounds against two ``cloudmeta api`` (one inventory each),
    median per side.

    One run per size (``scale``) puts the two sizes tens of seconds apart, and on a shared
    machine the run queue moves p99 by more than the inventory does; alternating rounds see the
    same load on both sides, so their ratio is the inventory's share.
    """
    rows: list[Row] = []
    small, big = AB_SIZES if not settings.quick else (100, 1000)
    for kind in ("sqlite", "postgresql"):
        async with database(kind) as url_a, database(kind) as url_b:
            api_a = await start_api(tmp / f"{kind}-a", database=url_a)
            try:
                api_b = await start_api(tmp / f"{kind}-b", database=url_b)
                try:
                    pairs = ((api_a, small, "a"), (api_b, big, "b"))
                    sides = [await _ab_side(api, tmp, kind, n, tag) for api, n, tag in pairs]
                    for what in ("meta", "ports"):
                        rows += await _ab_rounds(settings, kind, what, sides)
                finally:
                    await api_b.close()
            finally:
                await api_a.close()
    return rows


async def _ab_side(
    api: Api, tmp: Path, kind: str, size: int, tag: str
) -> tuple[int, dict[str, tuple[str, Path]]]:
    """One API's inventory at ``size`` ports: (size, {"meta"|"ports": (URL, wrk script)})."""
    from cloudmeta.inventory import Store

    server, project_id, network_id, ip = await small_inventory(api, 1)
    bulk = await api.client.create_subnet(network_id, BULK_SUBNET, project_id=project_id)
    store = await Store.open(config_of(api.options), migrate=False)
    try:
        await _insert_ports(store, project_id, network_id, bulk["id"], 1, size)
    finally:
        await store.close()
    meta_lua = signed_headers(server["id"], project_id, ip)
    ports_lua = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    targets = {
        "meta": (f"{api.metadata_url}{META_PATH}",
                 lua_headers(tmp / f"{kind}-ab-{tag}-meta.lua", meta_lua)),
        "ports": (f"{api.admin_url}/v1/ports?ip_address={ip}&network_id={network_id}",
                  lua_headers(tmp / f"{kind}-ab-{tag}-ports.lua", ports_lua)),
    }  # fmt: skip
    for url, script in targets.values():
        await wrk(url, 1, script=script)
    return size, targets


async def _ab_rounds(
    settings: Settings,
    kind: str,
    what: str,
    sides: list[tuple[int, dict[str, tuple[str, Path]]]],
) -> list[Row]:
    rounds: dict[int, list[dict[str, float]]] = {size: [] for size, _ in sides}
    for turn in AB_ROUNDS if not settings.quick else "AB":
        size, targets = sides[0] if turn == "A" else sides[1]
        url, script = targets[what]
        rounds[size].append(
            await wrk(url, settings.scale_duration, script=script, connections=SCALE_CONNECTIONS)
        )
    return [
        median_row(f"scale-ab-{kind}-{what}-{size}", figures, settings.scale_duration, ports=size)
        for size, figures in rounds.items()
    ]
