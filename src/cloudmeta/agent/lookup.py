"""Port lookup: (caller, networks) -> the one instance and project, cached against the feed.

Neutron's agent asked the server once per request (CONTRACTS 6); here answers are cached and
the cache follows the admin API's change feed. A change drops only the keys it touches: a port
change the lookups for its (network, MAC or address) pairs and its device's router key, a
router change that router's key, a network change the lookups on that network; a change whose
touches are unknown (an older server) or a resync marker drops everything. So a deleted or
moved port stops resolving as soon as the change is seen, and a boot storm's new ports do not
empty the cache. While the feed is not healthy the cache is bypassed, never trusted; a lookup
in flight when a change touched its key is served but not kept. A negative answer lives at
most ``NEGATIVE_TTL`` s. Identical concurrent lookups share one request (boot storms).
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cloudmeta.adminclient import AdminClient, AdminError, ChangeBatch, follow_changes
from cloudmeta.adminclient.types import Change
from cloudmeta.agent.identity import Caller
from cloudmeta.logs import get_logger
from cloudmeta.metrics import (
    FEED_APPLY,
    FEED_REVISION,
    PORT_CACHE_EVICTIONS,
    PORT_CACHE_HIT,
    PORT_CACHE_MISS,
)
from cloudmeta.singleflight import SingleFlight

__all__ = ["Lookup", "Owner", "PortCache"]

NEGATIVE_TTL = 0.5
POSITIVE_TTL = 30.0
FEED_RETRY = 0.5

log = get_logger("agent")
_HIT = PORT_CACHE_HIT
_MISS = PORT_CACHE_MISS
_EVICTED = PORT_CACHE_EVICTIONS.labels("change")
_CLEARED = PORT_CACHE_EVICTIONS.labels("resync")
_REVISION = FEED_REVISION.labels("port-cache")
_APPLY = FEED_APPLY.labels("port-cache")


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
_Ticket = tuple[_Key, int, int]  # a key with the generation and its epoch when fetched


class PortCache:
    """Cached port and router lookups; :meth:`follow` keeps them true to the change feed."""

    def __init__(self, client: AdminClient, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._clock = clock
        self._entries: dict[_Key, tuple[float, Any]] = {}
        # (network id, MAC or address) -> the port keys that name them (what a change drops)
        self._index: dict[tuple[str, str], set[_Key]] = {}
        # One fetch per (key, generation, epoch): a change touching a key in flight bumps its
        # epoch, so that fetch is not kept and later lookups do not join it.
        self._flights: SingleFlight[_Ticket, Any] = SingleFlight()
        self._epochs: dict[_Key, int] = {}
        self._generation = 0
        self.feed_healthy = False

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def invalidate(self) -> None:
        """Forget everything; lookups in flight will not store their (maybe stale) answers."""
        self._generation += 1
        _CLEARED.inc(len(self._entries))
        self._entries.clear()
        self._index.clear()

    def apply(self, batch: ChangeBatch) -> None:
        """Drop what a feed batch touches (everything for a resync)."""
        if batch.resync:
            self.invalidate()
            return
        for change in batch.changes:
            if not self._evict(change):
                self.invalidate()
                return

    def _evict(self, change: Change) -> bool:
        """Drop the keys ``change`` touches; False when that is not known."""
        kind = change["kind"]
        if kind not in ("port", "router", "network"):
            return True  # subnets, servers, key pairs, projects: no lookup reads them
        if kind == "router":
            self._drop(("router", change["id"]))
            return True
        if kind == "network":
            network = change["id"]
            self._drop_where(lambda key: key[0] == "port" and network in key[2:])
            return True
        touches = change.get("touches")
        if touches is None:
            return False
        networks = touches.get("network_ids", [])
        names = [_name(v) for v in touches.get("mac_addresses", [])]
        names += [_name(v) for v in touches.get("ip_addresses", [])]
        for network in networks:
            for name in names:
                for key in list(self._index.get((network, name), ())):
                    self._drop(key)
        pairs = {(n, a) for n in networks for a in names}
        for key in self._in_flight():
            if key[0] == "port" and any((n, _name(key[1])) in pairs for n in key[2:]):
                self._touch(key)
        for device_id in touches.get("device_ids", []):  # a router's interface
            self._drop(("router", device_id))
        return True

    def _in_flight(self) -> set[_Key]:
        return {ticket[0] for ticket in self._flights}

    def _touch(self, key: _Key) -> None:
        self._epochs[key] = self._epochs.get(key, 0) + 1

    def _drop_where(self, touched: Callable[[_Key], bool]) -> None:
        for key in [k for k in self._entries if touched(k)]:
            self._drop(key)
        for key in self._in_flight():
            if touched(key):
                self._touch(key)

    def _drop(self, key: _Key) -> None:
        if key in self._in_flight():
            self._touch(key)
        if self._entries.pop(key, None) is None:
            return
        _EVICTED.inc()
        if key[0] != "port":
            return
        name = _name(key[1])
        for network in key[2:]:
            keys = self._index.get((network, name))
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._index[(network, name)]

    def _store(self, key: _Key, expires: float, value: Any) -> None:
        self._entries[key] = (expires, value)
        if key[0] == "port":
            name = _name(key[1])
            for network in key[2:]:
                self._index.setdefault((network, name), set()).add(key)

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
            _HIT.inc()
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
        entry = self._entries.get(key)
        if entry is not None and entry[0] > self._clock() and self.feed_healthy:
            _HIT.inc()
            return entry[1]
        _MISS.inc()
        ticket = (key, self._generation, self._epochs.get(key, 0))
        return await self._flights.run(ticket, lambda: self._fetch(ticket, fetch))

    async def _fetch(
        self, ticket: tuple[_Key, int, int], fetch: Callable[[], Awaitable[Any]]
    ) -> Any:
        """The leader's part: fetch, and keep the answer unless a change raced it."""
        key = ticket[0]
        try:
            value = await fetch()
        except AdminError as exc:
            if exc.status == 0:
                self._lost()  # the feed may have missed changes while the API was away
            raise
        finally:
            raced = ticket != (key, self._generation, self._epochs.get(key, 0))
            if sum(1 for t in self._flights if t[0] == key) <= 1:
                self._epochs.pop(key, None)  # the last flight of this key ends
        if not raced and self.feed_healthy:
            negative = (isinstance(value, Lookup) and value.owner is None) or value == ()
            ttl = NEGATIVE_TTL if negative else POSITIVE_TTL
            self._store(key, self._clock() + ttl, value)
        return value

    def _lost(self) -> None:
        self.feed_healthy = False
        self.invalidate()

    async def follow(self) -> None:
        """Run forever: drop what every batch touches. The cache is trusted only after a
        batch arrived since the last sign of trouble (the feed starts with a resync)."""
        while True:
            try:
                async for batch in follow_changes(self._client):
                    started = time.perf_counter()
                    self.apply(batch)
                    self.feed_healthy = True
                    _APPLY.observe(time.perf_counter() - started)
                    _REVISION.set(batch.revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("change feed failed; port cache bypassed", error=str(exc))
            self._lost()
            await asyncio.sleep(FEED_RETRY)


def _name(value: str) -> str:
    """A MAC or an address in one spelling (the feed's and the caller's may differ)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value.lower()
