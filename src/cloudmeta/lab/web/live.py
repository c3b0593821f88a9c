"""The lab as the page shows it, kept current: one snapshot, rebuilt when something changes.

Three sources mark it stale: the admin API's change feed (networks, routers, servers, ports:
:func:`~cloudmeta.adminclient.follow_changes`), the lab's own record and each instance's boot
status (files the boot script writes, read every :data:`WATCH_INTERVAL`), and the page's own
fetches. A rebuild publishes a new version; every open event stream is woken by it. Metrics
are scraped from the admin API's ``/metrics`` every :data:`SCRAPE_INTERVAL`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp

from cloudmeta.adminclient import AdminClient, AdminError, ChangeBatch, follow_changes
from cloudmeta.config import Config
from cloudmeta.lab import cloud, instance
from cloudmeta.lab.state import LabInstance, LabState, load_state
from cloudmeta.lab.web.documents import Fetch, RecentRequests, fetch_documents
from cloudmeta.lab.web.rates import Scrape, parse, rates
from cloudmeta.linux.process import pid_alive
from cloudmeta.logs import get_logger

__all__ = ["SCRAPE_INTERVAL", "WATCH_INTERVAL", "LabView", "MetricsScraper", "stale_rows"]

WATCH_INTERVAL = 0.5
SCRAPE_INTERVAL = 2.0
SERIES = 90  # chart points kept (3 minutes)
RESTART_DELAY = 1.0  # seconds before a failed view task runs again
ROWS_AT_ONCE = 4  # instance rows computed at once (each runs commands inside an instance)
_log = get_logger("lab-page")


async def _kept(body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` again when it fails: the page goes stale for a moment, the lab goes on."""
    while True:
        try:
            await body()
        except Exception:
            _log.exception("lab page: a view task failed; restarting it", task=body.__name__)
        await asyncio.sleep(RESTART_DELAY)


def stale_rows(batch: ChangeBatch, instances: Iterable[LabInstance]) -> set[str] | None:
    """The instances whose row (path, next hop) a batch of changes can alter; None: all.

    A router or subnet change can move every path; a port or server change only those of the
    instances it names (its own server or port, or a port on its network: the DHCP port).
    """
    if batch.resync:
        return None
    names: set[str] = set()
    listed = list(instances)
    for change in batch.changes:
        touches = change.get("touches")
        if change["kind"] in ("router", "subnet") or touches is None:
            return None
        ids = {change["id"], *(i for found in touches.values() for i in found)}
        names |= {i.name for i in listed if ids & {i.server_id, i.port_id, i.network_id}}
    return names


def _admin_token(config: Config) -> str | None:
    """The admin token, for a ``/metrics`` behind the admin API's bearer check."""
    if config.admin_token is not None:
        return config.admin_token.get_secret_value()
    try:
        return config.admin_token_file.read_text().strip()
    except OSError:
        return None


class MetricsScraper:
    """Scrapes of one ``/metrics`` URL, and the chart's series of requests/s and p99 per hop.

    A 404 (a cloudmeta without metrics) or an unreachable URL is a status line, not an error:
    the page shows "no metrics" and everything else goes on.
    """

    def __init__(self, session: aiohttp.ClientSession, url: str, token: str | None = None) -> None:
        self._session = session
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._last: Scrape | None = None
        self.status = "waiting for the first scrape"
        self.series: deque[dict[str, Any]] = deque(maxlen=SERIES)

    def view(self) -> dict[str, Any]:
        return {"status": self.status, "url": self._url, "series": list(self.series)}

    async def scrape(self) -> None:
        text = await self._text()
        if text is not None:
            self.add(text, time.time())

    async def _text(self) -> str | None:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            get = self._session.get(self._url, timeout=timeout, headers=self._headers)
            async with get as response:
                if response.status == 404:
                    self.status = "no metrics"
                    return None
                if response.status != 200:
                    self.status = f"no metrics ({self._url} answered {response.status})"
                    return None
                return await response.text()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.status = f"no metrics ({self._url} unreachable: {exc.__class__.__name__})"
            return None

    def add(self, text: str, at: float) -> None:
        """One scrape's text taken at ``at``; from the second on, a point of the series."""
        try:
            now = parse(text, at)
        except ValueError as exc:
            self.status = f"no metrics (unreadable: {exc})"
            return
        before, self._last = self._last, now
        self.status = "ok"
        if before is None:
            return
        hops = {
            r.hop: {
                "rps": round(r.rps, 2),
                "p99_ms": None if r.p99_seconds is None else round(r.p99_seconds * 1000, 2),
            }
            for r in rates(before, now)
        }
        self.series.append({"at": now.at, "hops": hops})


class LabView:
    """The snapshot of one running lab and the tasks that keep it current."""

    def __init__(
        self,
        config: Config,
        client: AdminClient,
        state: LabState,
        *,
        metrics_url: str | None = None,
    ) -> None:
        """``metrics_url``: where to scrape (by default the admin API's ``/metrics``)."""
        self._config = config
        self._metrics_url = metrics_url or f"{client.url}/metrics"
        self._client = client
        self._state = state
        self._stale = asyncio.Event()
        self._changed = asyncio.Condition()
        self._version = 0
        self._ending = False
        self._snapshot: dict[str, Any] = {}
        self._rows: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, tuple[str, str | None]] = {}  # name -> (status, last step)
        self._api: dict[str, Any] = {"networks": [], "routers": [], "subnets": []}
        self._api_stale = True
        self._metrics: MetricsScraper | None = None
        self._recent = RecentRequests()
        self._fetching: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None

    @property
    def snapshot(self) -> dict[str, Any]:
        return self._snapshot

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        token = _admin_token(self._config)
        self._metrics = MetricsScraper(self._http, self._metrics_url, token)
        self._stale.set()  # the first snapshot
        for body in (self._follow, self._watch, self._scrape, self._refresh):
            self._tasks.append(asyncio.create_task(_kept(body)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._http is not None:
            await self._http.close()

    async def wait_newer(self, version: int) -> tuple[int, dict[str, Any]] | None:
        """The next snapshot after ``version`` (at once if there is one already); None once
        :meth:`end_streams` was called."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._ending or self._version > version)
            return None if self._ending else (self._version, self._snapshot)

    async def end_streams(self) -> None:
        """Every event stream ends (a complete response), before the listener closes."""
        async with self._changed:
            self._ending = True
            self._changed.notify_all()

    def instance(self, name: str) -> LabInstance | None:
        return self._state.instances.get(name)

    async def documents(self, name: str) -> list[Fetch] | None:
        """Fetch ``name``'s documents from inside it (one fetch at a time per instance)."""
        inst = self.instance(name)
        if inst is None:
            return None
        lock = self._fetching.setdefault(name, asyncio.Lock())
        async with lock:
            found = await fetch_documents(cloud.instance_paths(self._config, name), inst.datasource)
        for fetch in found:
            self._recent.add(name, fetch)
        self._stale.set()
        return found

    # -- the sources --------------------------------------------------------------------------

    async def _follow(self) -> None:
        async for batch in follow_changes(self._client):
            self._api_stale = True
            names = stale_rows(batch, self._state.instances.values())
            for name in set(self._rows) if names is None else names:
                self._rows.pop(name, None)
            self._stale.set()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            current = await asyncio.to_thread(load_state, self._config)
            if current is not None:
                self._state = current
            for name in self._state.instances:
                paths = cloud.instance_paths(self._config, name)
                seen = (instance.read_status(paths), instance.last_step(paths))
                if self._seen.get(name) != seen:
                    self._seen[name] = seen
                    self._rows.pop(name, None)
                    self._stale.set()
            for gone in set(self._seen) - set(self._state.instances):
                self._seen.pop(gone)
                self._recent.forget(gone)
                self._stale.set()

    async def _scrape(self) -> None:
        assert self._metrics is not None
        while True:
            await self._metrics.scrape()
            self._stale.set()
            await asyncio.sleep(SCRAPE_INTERVAL)

    # -- the snapshot -------------------------------------------------------------------------

    async def _refresh(self) -> None:
        while True:
            await self._stale.wait()
            self._stale.clear()
            try:
                await self._rebuild()
            except (AdminError, OSError) as exc:
                _log.warning("lab page: cannot rebuild its view", error=str(exc))
                self._api_stale = True
            await asyncio.sleep(0.2)  # a burst of changes (a boot) makes one rebuild

    async def _rebuild(self) -> None:
        if self._api_stale:
            self._api_stale = False
            networks, subnets, routers = await asyncio.gather(
                self._client.list_networks(),
                self._client.list_subnets(),
                self._client.list_routers(),
            )
            self._api = {"networks": networks, "subnets": subnets, "routers": routers}
        instances = list(self._state.instances.values())
        missing = [i for i in instances if i.name not in self._rows]
        gate = asyncio.Semaphore(ROWS_AT_ONCE)

        async def one(inst: LabInstance) -> dict[str, Any]:
            async with gate:
                return await cloud.instance_row(self._client, self._config, inst)

        rows = await asyncio.gather(*(one(i) for i in missing))
        for inst, row in zip(missing, rows, strict=True):
            self._rows[inst.name] = row
        self._snapshot = {
            "updated": time.time(),
            "admin_url": self._client.url,
            "nodes": [self._node()],
            "networks": self._networks(),
            "routers": self._routers(),
            "instances": [self._instance(i) for i in instances],
            "metrics": self._metrics.view() if self._metrics else {"status": "-", "series": []},
        }
        async with self._changed:
            self._version += 1
            self._changed.notify_all()

    def _node(self) -> dict[str, Any]:
        pid = self._state.all_in_one_pid
        return {
            "name": socket.gethostname(),
            "kernel": os.uname().release,
            "services": "cloudmeta all-in-one: admin and metadata API, metadata, DHCP, L3 agents",
            "pid": pid,
            "running": bool(pid and pid_alive(pid)),
            "instances": len(self._state.instances),
        }

    def _networks(self) -> list[dict[str, Any]]:
        subnets: dict[str, list[dict[str, Any]]] = {}
        for subnet in self._api["subnets"]:
            subnets.setdefault(subnet["network_id"], []).append(subnet)
        routed = {i["network_id"]: r["name"] for r in self._api["routers"] for i in r["interfaces"]}
        lab_ids = set(self._state.networks)
        return [
            {
                "id": n["id"],
                "name": n["name"],
                "cidrs": [s["cidr"] for s in subnets.get(n["id"], [])],
                "gateways": [s["gateway_ip"] for s in subnets.get(n["id"], []) if s["gateway_ip"]],
                "router": routed.get(n["id"]),
                "lab": n["id"] in lab_ids,
            }
            for n in self._api["networks"]
        ]

    def _routers(self) -> list[dict[str, Any]]:
        names = {n["id"]: n["name"] for n in self._api["networks"]}
        return [
            {
                "id": r["id"],
                "name": r["name"],
                "interfaces": [
                    {"network": names.get(i["network_id"], i["network_id"]), "ip": i["ip_address"]}
                    for i in r["interfaces"]
                ],
            }
            for r in self._api["routers"]
        ]

    def _instance(self, inst: LabInstance) -> dict[str, Any]:
        row = self._rows.get(inst.name, {})
        status, step = self._seen.get(inst.name, ("booting", None))
        return {
            "name": inst.name,
            "server_id": inst.server_id,
            "datasource": inst.datasource,
            "network": inst.network,
            "ip": inst.ip,
            "mac": inst.mac,
            "path": row.get("path"),
            "next_hop": row.get("metadata_next_hop"),
            "hostname": row.get("hostname"),
            "result": row.get("result", status),
            "step": step,
            "boot_seconds": row.get("boot_seconds"),
            "errors": row.get("errors", []),
            "requests": self._recent.of(inst.name),
        }
