"""The metadata API hosts an agent forwards to (``nova_metadata_host``), and which answer.

One keep-alive pool per host. Each agent prefers the hosts in an order of its own (the list
rotated by a hash of ``host``, so a cloud's agents spread over its API hosts). A host is down
for ``DOWN_SECONDS`` when a request to it fails: refused or reset (a killed process), not
connected within ``FAILOVER_CONNECT_TIMEOUT`` (a host gone without a word), or stalled: a
request in flight for ``STALL_AFTER`` while the host does not answer a probe of its root
within ``PROBE_TIMEOUT`` (a hung process, or a pooled connection to a host that lost power;
probes at most every ``PROBE_INTERVAL``, so a stall is cut within about 1.5 s);
the stalled requests are then cut short so the caller can go on to the next host. A host that
answers its probe is only slow (a dynamic vendordata target, say) and is left alone. A host
down is probed every ``DOWN_SECONDS`` and back in its turn once it answers; until then it is
tried only after every other host.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.config import Config
from cloudmeta.http import Relay
from cloudmeta.logs import get_logger

__all__ = ["DOWN_SECONDS", "FAILOVER_CONNECT_TIMEOUT", "Upstream", "Upstreams"]

POOL_SIZE = 256
FAILOVER_CONNECT_TIMEOUT = 1.0
DOWN_SECONDS = 2.0
STALL_AFTER = 0.5
STALL_CHECK = 0.25
PROBE_TIMEOUT = 0.5
# After a probe the host answered, the next one waits this long (a parked change long-poll
# keeps requests in flight for minutes; one probe a second is its whole cost).
PROBE_INTERVAL = 1.0

log = get_logger("agent")


@dataclass(eq=False)
class Upstream:
    """One metadata API host: its pool, until when it counts as down, what is in flight."""

    base: str
    relay: Relay
    down_since: float | None = None
    inflight: dict[asyncio.Timeout, float] = field(default_factory=dict)
    watchdog: asyncio.Task[None] | None = None
    recovery: asyncio.Task[None] | None = None
    answered_probe: float = 0.0


class Upstreams:
    """``candidates()`` in the order to try; ``send()`` to one; ``failed``/``answered``."""

    def __init__(self, config: Config) -> None:
        bases = config.nova_metadata_urls
        start = zlib.crc32(config.host.encode()) % len(bases)
        bases = bases[start:] + bases[:start]
        self.several = len(bases) > 1
        connect = FAILOVER_CONNECT_TIMEOUT if self.several else None
        self.all = [
            Upstream(
                base,
                Relay(
                    base,
                    aiohttp.TCPConnector,
                    timeout=config.nova_metadata_timeout,
                    pool=POOL_SIZE,
                    keepalive=config.metadata_proxy_keepalive_timeout / 2,
                    connect_timeout=connect,
                ),
            )
            for base in bases
        ]
        self._probes: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        for upstream in self.all:
            await upstream.relay.start()
        if self.several:
            self._probes = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True),
                timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT),
            )

    async def close(self) -> None:
        for upstream in self.all:
            for task in (upstream.watchdog, upstream.recovery):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            await upstream.relay.close()
        if self._probes is not None:
            await self._probes.close()
            self._probes = None

    def candidates(self) -> list[Upstream]:
        """Hosts up (in preference order), then those down (longest down last)."""
        up = [u for u in self.all if u.down_since is None]
        down = sorted((u for u in self.all if u.down_since is not None), key=_down_since)
        return up + list(reversed(down))

    def failed(self, upstream: Upstream) -> bool:
        """Mark the host down (probed until it answers again); whether it was up until now."""
        if upstream.down_since is not None:
            return False
        upstream.down_since = time.monotonic()
        if self.several and (upstream.recovery is None or upstream.recovery.done()):
            upstream.recovery = asyncio.create_task(
                self._recover(upstream), name="agent-upstream-recovery"
            )
        return True

    @staticmethod
    def answered(upstream: Upstream) -> None:
        if upstream.down_since is not None:
            log.info("metadata API answers again", url=upstream.base)
        upstream.down_since = None

    async def _recover(self, upstream: Upstream) -> None:
        while upstream.down_since is not None:
            await asyncio.sleep(DOWN_SECONDS)
            if upstream.down_since is not None and await self._probe(upstream):
                self.answered(upstream)

    async def send(
        self,
        upstream: Upstream,
        method: str,
        path_qs: str,
        headers: CIMultiDict[str],
        body: bytes | None,
    ) -> web.Response:
        """The host's answer; raises :data:`cloudmeta.http.UpstreamError` (TimeoutError when
        the watchdog found the host stalled)."""
        if not self.several:
            return await upstream.relay.send(method, path_qs, headers, body)
        async with asyncio.timeout(None) as guard:
            upstream.inflight[guard] = time.monotonic()
            if upstream.watchdog is None or upstream.watchdog.done():
                upstream.watchdog = asyncio.create_task(
                    self._watch(upstream), name="agent-upstream-watchdog"
                )
            try:
                return await upstream.relay.send(method, path_qs, headers, body)
            finally:
                upstream.inflight.pop(guard, None)

    async def _watch(self, upstream: Upstream) -> None:
        """While requests are in flight: cut them short when the host stalls."""
        loop = asyncio.get_running_loop()
        while upstream.inflight:
            await asyncio.sleep(STALL_CHECK)
            now = time.monotonic()
            if not any(now - started >= STALL_AFTER for started in upstream.inflight.values()):
                continue
            if now - upstream.answered_probe < PROBE_INTERVAL:
                continue
            if await self._probe(upstream):
                upstream.answered_probe = time.monotonic()
                continue
            stalled = list(upstream.inflight)
            upstream.inflight.clear()  # each cut once
            self.failed(upstream)
            log.warning("metadata API stalled", url=upstream.base, requests=len(stalled))
            for guard in stalled:
                guard.reschedule(loop.time())

    async def _probe(self, upstream: Upstream) -> bool:
        """Does the host answer its root (any HTTP status) within ``PROBE_TIMEOUT``?"""
        if self._probes is None:
            return True
        try:
            async with self._probes.get(upstream.base + "/") as response:
                await response.read()
                return True
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False


def _down_since(upstream: Upstream) -> float:
    return upstream.down_since or 0.0
