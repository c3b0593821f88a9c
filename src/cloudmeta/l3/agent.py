"""The L3 agent: keeps one router namespace per router in line with the admin API.

At start it syncs every router and deletes stale ``<prefix>qrouter-*`` namespaces; then it
follows the change feed. Each router has its own worker task, so a router whose namespace cannot
be built is retried with exponential backoff while the others go on. A "resync" marker of the
feed (history lost) triggers a full sync again.

Only the routers the admin API scheduled to this agent are built: it registers (as ``host``)
before its first full sync, reports every ``report_interval`` seconds, and rereads its own
record when the feed says its share changed; a router moved to another agent is removed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from cloudmeta.adminclient import AdminClient, AgentReporter, ChangeBatch, follow_changes
from cloudmeta.config import Config
from cloudmeta.l3.fetch import fetch_router, routers_touched
from cloudmeta.l3.manager import ProxyManager, RouterManager
from cloudmeta.l3.model import L3Error, Router
from cloudmeta.linux.process import ProcessMonitor
from cloudmeta.logs import get_logger
from cloudmeta.metrics import FEED_APPLY, FEED_REVISION
from cloudmeta.scheduler import AGENT_TYPE_L3

__all__ = ["BACKOFF_MAX", "BACKOFF_START", "L3Agent"]

log = get_logger("l3")
_FEED_APPLY = FEED_APPLY.labels("l3-agent")
_FEED_REVISION = FEED_REVISION.labels("l3-agent")

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
FEED_RETRY = 2.0


class _Worker:
    """Brings one router in line whenever woken; retries failures with backoff.

    ``attempted`` is set once the latest wake has been tried (successfully or not), so a caller
    can wait for the agent to have acted on a change without waiting out a failing router.
    """

    def __init__(self, router_id: str, sync: Callable[[str], Awaitable[bool]]) -> None:
        self.router_id = router_id
        self._sync = sync
        self._wake = asyncio.Event()
        self._wake.set()
        self.attempted = asyncio.Event()
        self.failures = 0
        self.task = asyncio.create_task(self._run(), name=f"l3-router-{router_id}")

    def wake(self) -> None:
        self.attempted.clear()
        self._wake.set()

    async def _run(self) -> None:
        delay = BACKOFF_START
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                exists = await self._sync(self.router_id)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                log.warning(
                    "router sync failed; will retry",
                    router_id=self.router_id,
                    error=str(exc),
                    retry_in=delay,
                    failures=self.failures,
                )
                if not self._wake.is_set():
                    self.attempted.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                delay = min(delay * 2, BACKOFF_MAX)
                self._wake.set()
                continue
            delay = BACKOFF_START
            if not self._wake.is_set():
                self.attempted.set()
            if not exists:
                return  # router deleted: the worker ends; a new one starts if it comes back


class L3Agent:
    """``await L3Agent(config, client, proxy_manager, monitor).run()`` until cancelled.

    ``proxy_manager`` is the :class:`cloudmeta.proxy.MetadataProxyManager` shared with the
    other agents of the process; ``monitor`` (shared too) is started here so that the routers'
    proxy processes are respawned. Stopping removes nothing: a restarted agent adopts the
    namespaces and deletes those of routers that are gone.
    """

    def __init__(
        self,
        config: Config,
        client: AdminClient,
        proxy_manager: ProxyManager,
        monitor: ProcessMonitor | None = None,
        *,
        bridge_namespace: str | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._monitor = monitor
        self.manager = RouterManager(config, proxy_manager, bridge_namespace=bridge_namespace)
        self._workers: dict[str, _Worker] = {}
        self._routers: dict[str, Router] = {}
        self._revision = -1
        self._applied = asyncio.Condition()
        self.reporter = AgentReporter(
            client,
            AGENT_TYPE_L3,
            config.host,
            config.report_interval,
            {"namespace_prefix": config.namespace_prefix, "metadata_port": config.metadata_port},
        )
        self._hosted: set[str] = set()
        self._report: asyncio.Task[None] | None = None

    @property
    def routers(self) -> dict[str, Router]:
        """The routers as last built, by id (for status and tests)."""
        return dict(self._routers)

    async def run(self) -> None:
        """Full sync, then follow changes; a lost feed means a new full sync."""
        if self._monitor is not None:
            self._monitor.start()
        self._report = asyncio.create_task(self.reporter.run(), name="l3-report")
        try:
            while True:
                try:
                    # The feed's first batch is a resync: that is the full sync at start.
                    async for batch in follow_changes(self._client):
                        started = time.perf_counter()
                        if batch.resync:
                            await self.sync_all()
                        else:
                            touched = await routers_touched(self._client, batch, self._routers)
                            touched |= await self._rehost(batch)
                            for router_id in touched:
                                self._schedule(router_id)
                        async with self._applied:
                            self._revision = batch.revision
                            self._applied.notify_all()
                        _FEED_APPLY.observe(time.perf_counter() - started)
                        _FEED_REVISION.set(batch.revision)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("change feed lost; full sync when it is back", error=str(exc))
                    await asyncio.sleep(FEED_RETRY)
        finally:
            await self.close()

    async def sync_all(self) -> None:
        """Schedule every router and delete namespaces of routers that no longer exist."""
        wanted = set((await self.reporter.refresh())["routers"])
        self._hosted = wanted
        for router_id, worker in list(self._workers.items()):
            if worker.task.done():
                del self._workers[router_id]
        for router_id in sorted(wanted | set(self._workers)):
            self._schedule(router_id)
        for router_id in self.manager.existing_router_ids() - wanted - set(self._workers):
            log.info("removing stale router namespace", router_id=router_id)
            try:
                await self.manager.remove(router_id)
            except L3Error as exc:  # the next full sync tries again
                log.warning("stale router namespace not removed", error=str(exc))

    async def wait_for_revision(self, revision: int, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Until the changes up to ``revision`` were read and every router they touched was
        tried once (a failing router is not waited out: see :meth:`failures`)."""
        async with asyncio.timeout(timeout):
            async with self._applied:
                await self._applied.wait_for(lambda: self._revision >= revision)
            for worker in list(self._workers.values()):
                await worker.attempted.wait()

    def failures(self, router_id: str) -> int:
        worker = self._workers.get(router_id)
        return worker.failures if worker else 0

    def _schedule(self, router_id: str) -> None:
        worker = self._workers.get(router_id)
        if worker is None or worker.task.done():
            self._workers[router_id] = _Worker(router_id, self._sync_router)
        else:
            worker.wake()

    async def _sync_router(self, router_id: str) -> bool:
        """Build or update the router; remove it if it is gone. Returns whether it exists."""
        router = await fetch_router(self._client, router_id) if router_id in self._hosted else None
        if router is None:
            await self.manager.remove(router_id)
            if self._routers.pop(router_id, None) is not None:
                log.info("router removed", router_id=router_id)
            return False
        await self.manager.ensure(router)
        self._routers[router_id] = router
        return True

    async def _rehost(self, batch: ChangeBatch) -> set[str]:
        """The routers that came or went when the batch changed this agent's share."""
        if not self.reporter.concerns(batch):
            return set()
        hosted = set((await self.reporter.refresh())["routers"])
        moved = hosted ^ self._hosted
        self._hosted = hosted
        return moved

    async def close(self) -> None:
        """Stop the workers; namespaces and proxies stay (a restarted agent adopts them)."""
        if self._report is not None:
            self._report.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._report
            self._report = None
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            worker.task.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker.task
