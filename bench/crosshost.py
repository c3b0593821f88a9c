"""Read-your-writes across API hosts: a write acknowledged by API host A, then the delay until
API host B answers the new document (issue 14: p99 within 100 ms).

Two ``cloudmeta api`` processes, each its own state_path (no shared revision file: as two
machines), on one PostgreSQL database. B has the instance's document cached before each
write, so the figure is the invalidation path: A's commit, PostgreSQL's NOTIFY, B's listener
waking its cache, B's next answer. Without LISTEN/NOTIFY it was B's 0.5 s poll.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import aiohttp

from bench.common import META_PATH, Row, Settings
from bench.scale import database
from bench.services import signed_headers, small_inventory, start_api

WRITES = 1000
QUICK_WRITES = 50
# A write whose new state B does not answer within this long counts as a failure.
GIVE_UP = 5.0


async def _seq(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> str | None:
    async with session.get(url, headers=headers) as response:
        if response.status != 200:
            return None
        return str(json.loads(await response.read())["meta"].get("seq"))


async def run(settings: Settings, tmp: Path) -> list[Row]:
    writes = QUICK_WRITES if settings.quick else WRITES
    async with database("postgresql") as url:
        a = await start_api(tmp / "host-a", url, workers=1)
        try:
            b = await start_api(tmp / "host-b", url, workers=1)
            try:
                return [await _measure(a, b, writes)]
            finally:
                await b.close()
        finally:
            await a.close()


async def _measure(a: object, b: object, writes: int) -> Row:
    from bench.services import Api

    assert isinstance(a, Api) and isinstance(b, Api)
    server, project_id, _, ip = await small_inventory(a, 1)
    headers = signed_headers(server["id"], project_id, ip)
    target = f"{b.metadata_url}{META_PATH}"
    delays: list[float] = []
    # Of each delay: the first answer with the new state itself (B reloading the document).
    reloads: list[float] = []
    failures = stale_answers = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        await _seq(session, target, headers)  # B caches the document
        for index in range(writes):
            wanted = str(index)
            await a.client.update_server(server["id"], metadata={"seq": wanted})
            acked = time.perf_counter()
            while True:
                asked = time.perf_counter()
                if await _seq(session, target, headers) == wanted:
                    done = time.perf_counter()
                    delays.append(done - acked)
                    reloads.append(done - asked)
                    break
                stale_answers += 1
                if time.perf_counter() - acked > GIVE_UP:
                    failures += 1
                    break
    total = time.perf_counter() - started
    ordered = sorted(delays)
    p99 = _p99(ordered)
    reload_p50, reload_p99 = (
        (statistics.median(reloads) * 1000, (_p99(sorted(reloads)) or 0) * 1000)
        if reloads
        else (0.0, 0.0)
    )
    return Row(
        "cross-host-delay",
        rps=writes / total,
        p50_ms=statistics.median(ordered) * 1000 if ordered else None,
        p99_ms=p99 * 1000 if p99 is not None else None,
        failures=failures,
        seconds=total,
        note=(
            f"{writes} writes on host A, read on host B; {stale_answers} stale answers polled; "
            f"the answering request alone (B's reload): p50 {reload_p50:.1f} ms, "
            f"p99 {reload_p99:.1f} ms"
        ),
    )


def _p99(ordered: list[float]) -> float | None:
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None
