"""Port lookup: (caller, networks) -> the one instance and project, cached against the feed.

Neutron's agent asked the server once per request (CONTRACTS 6); here answers are cached and
the cache follows the admin API's change feed: any port/router/network/subnet change, or a
resync marker, drops it, so a deleted or moved port stops resolving as soon as the change is
seen. While the feed is not healthy the cache is bypassed, never trusted. A negative answer
lives at most ``NEGATIVE_TTL`` s. Identical concurrent lookups share one request (boot storms).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloudmeta.adminclient import AdminClient, AdminError, ChangeBatch, follow_changes
from cloudmeta.agent.identity import Caller
from cloudmeta.logs import get_logger

__all__ = ["Lookup", "Owner", "PortCache"]

NEGATIVE_TTL = 0.5
POSITIVE_TTL = 30.0
FEED_RETRY = 0.5
_RELEVANT_KINDS = frozenset({"port", "router", "network", "subnet"})

log = get_logger("agent")


@dataclass(frozen=True, slots=True)
class Owner:
    instance_id: str
    project_id: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """``owner`` is set only when exactly one port matched; ``matches`` says how many did."""

    owner: Owner | None
    matches: int


_Key = tuple[str, ...]


class PortCache:
    """Cached port and router lookups; :meth:`follow` keeps them true to the change feed."""

    def __init__(self, client: AdminClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._entries: dict[_Key, tuple[float, Any]] = {}
        self._inflight: dict[_Key, asyncio.Future[Any]] = {}
        self._generation = 0
        self.feed_healthy = False

    def invalidate(self) -> None:
        """Forget everything; lookups in flight will not store their (maybe stale) answers."""
        self._generation += 1
        self._entries.clear()

    async def router_networks(self, router_id: str) -> tuple[str, ...]:
        async def fetch() -> tuple[str, ...]:
            try:
                router = await self._client.get_router(router_id)
            except AdminError as exc:
                if exc.status == 404:
                    return ()
                raise
            return tuple(sorted({iface["network_id"] for iface in router["interfaces"]}))

        result: tuple[str, ...] = await self._cached(("router", router_id), fetch)
        return result

    async def find(self, network_ids: Sequence[str], caller: Caller) -> Lookup:
        networks = tuple(sorted(network_ids))
        if not networks:
            return Lookup(None, 0)
        key: _Key = ("port", caller.mac or caller.ip, *networks)
        entry = self._entries.get(key)
        if entry is not None and self.feed_healthy and entry[0] > self._clock():
            hit: Lookup = entry[1]
            return hit  # the hot path: no closure, no future

        async def fetch() -> Lookup:
            if caller.mac is not None:
                ports = await self._client.list_ports(
                    network_id=list(networks), mac_address=caller.mac
                )
            else:
                ports = await self._client.list_ports(
                    network_id=list(networks), ip_address=caller.ip
                )
            if len(ports) != 1:
                return Lookup(None, len(ports))
            return Lookup(Owner(ports[0]["device_id"], ports[0]["project_id"]), 1)

        result: Lookup = await self._cached(key, fetch)
        return result

    async def _cached(self, key: _Key, fetch: Callable[[], Awaitable[Any]]) -> Any:
        now = self._clock()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now and self.feed_healthy:
            return entry[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        generation = self._generation
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            value = await fetch()
        except BaseException as exc:
            if isinstance(exc, AdminError) and exc.status == 0:
                self._lost()  # the feed may have missed changes while the API was away
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must log it
            raise
        else:
            future.set_result(value)
        finally:
            del self._inflight[key]
        if generation == self._generation and self.feed_healthy:
            negative = (isinstance(value, Lookup) and value.owner is None) or value == ()
            ttl = NEGATIVE_TTL if negative else POSITIVE_TTL
            self._entries[key] = (self._clock() + ttl, value)
        return value

    def _lost(self) -> None:
        self.feed_healthy = False
        self.invalidate()

    async def follow(self) -> None:
        """Run forever: drop the cache on every relevant batch. The cache is trusted only
        after a batch arrived since the last sign of trouble (the feed starts with a resync)."""
        while True:
            try:
                async for batch in follow_changes(self._client):
                    if _relevant(batch):
                        self.invalidate()
                    self.feed_healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed failed; port cache bypassed", error=str(exc))
            self._lost()
            await asyncio.sleep(FEED_RETRY)


def _relevant(batch: ChangeBatch) -> bool:
    """Does a batch touch ports, routers, networks or subnets (a resync always does)?"""
    return batch.resync or any(c["kind"] in _RELEVANT_KINDS for c in batch.changes)
