"""The metadata API's cache of rendered answers, and the one protocol that keeps it true.

:class:`InstanceCache` holds, per instance, the record and the bytes already rendered for each
path (a hot instance costs a dict lookup), plus address -> instance ids for source-ip identity.
An index from inventory objects to the instances built from them turns a change record into
the entries to drop: only those the change touches (see :mod:`cloudmeta.inventory.changes`).
A new port drops its device's instance and the addresses it holds, a DHCP port the instances
on its subnets (their ``dhcp_server``), a key pair the servers naming it; a new port on
network A drops nothing of network B nor of other instances. Only "history lost" drops all.

:class:`SyncedInstanceCache` is the coherence protocol, in one place:

1. A request first compares the source's change token (one read of a shared slot that every
   committing process of the host writes after its commit) with the *published* token, the
   one whose changes the cache reflects. Equal: the cache is current, serve from it.
2. Different: take the sync lock and re-read the token inside it. If the request ahead of us
   already published it, we are done (queued requests do not redo the same read); else read
   the changes after our revision, apply the invalidation, and only then publish the token
   read before the changes were fetched. So a token is never published ahead of the
   invalidation it stands for, and every write a worker of this host acknowledged (the
   admin API writes the slot before it answers) is applied before the next request.
3. A load (a cache miss) that raced a change (an invalidation applied while it ran, or a token
   that moved from the published one) is served but not kept. Concurrent misses share one
   load, but only within one generation of invalidations: a request that has seen a change
   never receives the answer of a load that began before it.

Writes from other hosts (a shared PostgreSQL) have no token here: the feed watcher applies
them through the same lock within the store's poll interval.

Change long-polls (:meth:`SyncedInstanceCache.wait_change`) ride on the same protocol: the
invalidation that drops an instance's entry wakes the requests waiting on it. A waiter whose
entry the cache did not keep (a racing load, a TTL of 0) is woken by any invalidation instead.
While anyone waits, the change token is also checked every :data:`WAIT_TOKEN_POLL` seconds, so
a write of another process of the host wakes it without a request to notice it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from prometheus_client import Counter

from cloudmeta.config import TokenPolicy
from cloudmeta.documents import Instance
from cloudmeta.inventory.models import DEVICE_OWNER_DHCP
from cloudmeta.logs import get_logger
from cloudmeta.metrics import (
    DOCUMENT_CACHE_EVICTIONS,
    DOCUMENT_CACHE_HIT,
    DOCUMENT_CACHE_MISS,
    FEED_APPLY,
    FEED_REVISION,
)
from cloudmeta.singleflight import SingleFlight

from .source import Changed, Loaded, MetadataSource

__all__ = ["Entry", "InstanceCache", "SyncedInstanceCache"]

_log = get_logger("api")
# Bound on rendered paths kept per instance (a client probing random paths cannot grow it).
MAX_PATHS = 128
# How long the feed watcher waits per long poll, and after a failure.
WATCH_TIMEOUT = 30.0
WATCH_RETRY = 1.0
# While long-polls wait: how often the change token is compared (a read of shared memory).
WAIT_TOKEN_POLL = 0.02

_IndexKey = tuple[str, ...]
_CHANGED = DOCUMENT_CACHE_EVICTIONS.labels("change")
_EXPIRED = DOCUMENT_CACHE_EVICTIONS.labels("expired")
_CLEARED = DOCUMENT_CACHE_EVICTIONS.labels("clear")
_REVISION = FEED_REVISION.labels("document-cache")
_APPLY = FEED_APPLY.labels("document-cache")


class Entry:
    __slots__ = (
        "etags",
        "expires",
        "has_v4",
        "instance",
        "keys",
        "responses",
        "tokens_required",
    )

    def __init__(self, loaded: Loaded, expires: float) -> None:
        instance = loaded.instance
        self.instance: Instance = instance
        self.expires = expires
        self.tokens_required = instance.metadata.get("http_tokens") == TokenPolicy.REQUIRED.value
        # Without an IPv4 fixed IP, local-ipv4 is the caller's address: answers vary by caller.
        self.has_v4 = bool(instance.fixed_ips(4))
        self.responses: dict[Any, Any] = {}
        # Per remembered response: its answer head (ETag included, serialised once: WireHead).
        self.etags: dict[Any, Any] = {}
        keys: set[_IndexKey] = set(loaded.depends_on)
        if instance.key_name:  # a key pair created later under this name concerns us
            keys.add(("key_name", instance.project_id, instance.key_name))
        self.keys = frozenset(keys)

    def remember(self, key: Any, value: Any) -> None:
        if len(self.responses) < MAX_PATHS:
            self.responses[key] = value


def _values(touches: Mapping[str, Sequence[str]], name: str) -> Sequence[str]:
    return touches.get(name, ())


class InstanceCache:
    """Entries by instance id plus address -> instance ids (source-ip identity)."""

    def __init__(self, ttl: float, on_drop: Callable[[str | None], None] | None = None) -> None:
        self.ttl = ttl
        self._on_drop = on_drop  # told of each dropped instance id; None: all were dropped
        self._entries: dict[str, Entry] = {}
        self._index: dict[_IndexKey, set[str]] = {}
        self._addresses: dict[str, tuple[list[str], float]] = {}

    def get(self, instance_id: str) -> Entry | None:
        entry = self._entries.get(instance_id)
        if entry is not None and entry.expires < time.monotonic():
            self.discard(instance_id, _EXPIRED)
            return None
        return entry

    def put(self, loaded: Loaded) -> Entry:
        instance_id = loaded.instance.id
        self.discard(instance_id, None)
        entry = Entry(loaded, time.monotonic() + self.ttl)
        if self.ttl > 0:
            self._entries[instance_id] = entry
            for key in entry.keys:
                self._index.setdefault(key, set()).add(instance_id)
        return entry

    def addresses(self, address: str) -> list[str] | None:
        found = self._addresses.get(address)
        if found is None or found[1] < time.monotonic():
            self._addresses.pop(address, None)
            return None
        return found[0]

    def put_addresses(self, address: str, instance_ids: list[str]) -> None:
        if self.ttl > 0:
            self._addresses[address] = (instance_ids, time.monotonic() + self.ttl)

    def invalidate(self, changes: Iterable[Changed] | None) -> None:
        """Drop what ``changes`` touch; None (history lost) drops everything."""
        if changes is None:
            self.clear()
            return
        for change in changes:
            self._apply(change)

    def _apply(self, change: Changed) -> None:
        kind, touches = change.kind, change.touches
        if kind == "server":
            self.discard(change.id)
            self._drop_addresses(touches)
        elif kind == "port":
            self._drop_holders(("port", change.id))
            if touches is None:  # not known what it touches: anyone's document may change
                self.clear()
                return
            for device_id in _values(touches, "device_ids"):
                self.discard(device_id)
            self._drop_addresses(touches)
            if DEVICE_OWNER_DHCP in _values(touches, "device_owners"):
                for subnet_id in _values(touches, "subnet_ids"):  # their meta dhcp_server
                    self._drop_holders(("subnet", subnet_id))
        elif kind in ("subnet", "network"):
            self._drop_holders((kind, change.id))
        elif kind == "keypair":
            self._drop_holders(("keypair", change.id))
            if touches is None:
                self.clear()
                return
            for project_id in _values(touches, "project_ids"):
                for name in _values(touches, "names"):
                    self._drop_holders(("key_name", project_id, name))
        # project and router changes alter no document.

    def _drop_holders(self, key: _IndexKey) -> None:
        for instance_id in list(self._index.get(key, ())):
            self.discard(instance_id)

    def _drop_addresses(self, touches: Mapping[str, Sequence[str]] | None) -> None:
        if touches is None:
            self._addresses.clear()
            return
        for address in _values(touches, "ip_addresses"):
            self._addresses.pop(address, None)

    def clear(self) -> None:
        _CLEARED.inc(len(self._entries))
        self._entries.clear()
        self._index.clear()
        self._addresses.clear()
        if self._on_drop is not None:
            self._on_drop(None)

    def kept(self, instance_id: str, entry: Entry) -> bool:
        """Is ``entry`` the one kept for the instance (so its invalidation will be seen)?"""
        return self._entries.get(instance_id) is entry

    def discard(self, instance_id: str, reason: Counter | None = _CHANGED) -> None:
        """Forget one instance's entry (its documents changed); ``reason`` is the eviction
        counter to bump (None: a replacement, no eviction)."""
        if self._on_drop is not None:
            self._on_drop(instance_id)
        entry = self._entries.pop(instance_id, None)
        if entry is None:
            return
        if reason is not None:
            reason.inc()
        for key in entry.keys:
            holders = self._index.get(key)
            if holders is not None:
                holders.discard(instance_id)
                if not holders:
                    del self._index[key]

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class SyncedInstanceCache:
    """An :class:`InstanceCache` kept coherent with a :class:`MetadataSource` (see above)."""

    def __init__(self, source: MetadataSource, ttl: float) -> None:
        self.entries = InstanceCache(ttl, on_drop=self._wake)
        self._source = source
        self._revision = 0
        self._token = source.change_token()  # published: the cache reflects its changes
        self._generation = 0  # bumped whenever an invalidation is applied
        self._lock = asyncio.Lock()
        # By (instance, generation): a request that saw an invalidation never joins a load
        # that began before it (that load may have read the state the change replaced).
        self._loads: SingleFlight[tuple[str, int], Entry | None] = SingleFlight()
        self._watcher: asyncio.Task[None] | None = None
        # Long-polls: by instance id, and those woken by any invalidation (entry not kept).
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._any: set[asyncio.Future[None]] = set()
        self._token_poll: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def revision(self) -> int:
        return self._revision

    @property
    def generation(self) -> int:
        """Bumped by every applied invalidation: read it before reading an entry to wait on."""
        return self._generation

    async def start(self) -> None:
        """Take the source's position (the cache is empty) and follow its feed."""
        self._token = self._source.change_token()  # read before the revision: never ahead
        self._revision = await self._source.revision()
        _REVISION.set(self._revision)
        self._watcher = asyncio.create_task(self._watch(), name="metadata-cache-watch")

    @property
    def stopping(self) -> bool:
        return self._stopping

    def release_waiters(self) -> None:
        """Shutdown: every long-poll answers now, and none waits from here on."""
        self._stopping = True
        self._wake(None)

    async def stop(self) -> None:
        self.release_waiters()
        if self._token_poll is not None:
            self._token_poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._token_poll
            self._token_poll = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def current(self) -> bool:
        """Does the cache reflect every change committed on this host? (The hot path.)"""
        return self._source.change_token() == self._token

    async def sync(self, until: int | None = None) -> None:
        """Apply the changes after our revision: those behind the token, or up to ``until``
        (a revision the feed reported, for writes of other hosts)."""
        async with self._lock:
            token = self._source.change_token()  # read before the changes it stands for
            if token == self._token and until in (None, self._revision):
                return  # a sync ahead of us applied it
            started = time.perf_counter()
            revision, changes = await self._source.changes_since(self._revision)
            if changes is None or changes:
                self._generation += 1
                self.entries.invalidate(changes)
                self._wake_unkept()
            self._revision = revision
            self._token = token  # published only now, after its invalidation
            _APPLY.observe(time.perf_counter() - started)
            _REVISION.set(revision)

    def lost(self) -> None:
        """The feed failed: trust nothing cached, keep nothing loading."""
        self._generation += 1
        self.entries.clear()

    # -- change long-polls ---------------------------------------------------------------

    async def wait_change(
        self,
        instance_id: str,
        entry: Entry,
        generation: int,
        timeout: float,  # noqa: ASYNC109 - a bound the caller computed from its deadline
    ) -> None:
        """Return when ``entry`` (read at ``generation``) may be stale, at shutdown, or after
        ``timeout`` seconds. Waking is a hint: the caller re-reads and compares ETags."""
        if self._stopping or generation != self._generation or timeout <= 0:
            return  # shutting down, or something changed since the caller read
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.entries.kept(instance_id, entry):
            bucket = self._waiters.setdefault(instance_id, set())
        else:
            bucket = self._any
        bucket.add(future)
        if self._token_poll is None:
            self._token_poll = asyncio.create_task(self._poll_token(), name="metadata-wait-poll")
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            bucket.discard(future)
            if not bucket and bucket is not self._any:
                self._waiters.pop(instance_id, None)

    def waiting(self) -> int:
        """How many long-polls wait now."""
        return len(self._any) + sum(len(b) for b in self._waiters.values())

    def _wake(self, instance_id: str | None) -> None:
        """The hook of :class:`InstanceCache`: an entry was dropped (None: all of them)."""
        if instance_id is None:
            buckets = [*self._waiters.values(), self._any]
        else:
            found = self._waiters.get(instance_id)
            if found is None:
                return
            buckets = [found]
        for bucket in buckets:
            for future in bucket:
                if not future.done():
                    future.set_result(None)

    def _wake_unkept(self) -> None:
        for future in self._any:
            if not future.done():
                future.set_result(None)

    async def _poll_token(self) -> None:
        """While anyone waits: apply a write of this host as soon as its token shows."""
        try:
            while self._waiters or self._any:
                await asyncio.sleep(WAIT_TOKEN_POLL)
                if not self.current():
                    try:
                        await self.sync()
                    except Exception as exc:  # the watcher reports and recovers
                        _log.warning("sync for long-polls failed", error=repr(exc))
        finally:
            self._token_poll = None

    def cached(self, instance_id: str) -> Entry | None:
        """The instance's entry if it is cached (the hot path: no coroutine), else None."""
        entry = self.entries.get(instance_id)
        if entry is not None:
            DOCUMENT_CACHE_HIT.inc()
        return entry

    async def entry(self, instance_id: str) -> Entry | None:
        """The instance's entry; a boot storm's concurrent misses share one load."""
        entry = self.cached(instance_id)
        if entry is not None:
            return entry
        DOCUMENT_CACHE_MISS.inc()
        generation = self._generation
        return await self._loads.run(
            (instance_id, generation), lambda: self._load(instance_id, generation)
        )

    async def _load(self, instance_id: str, generation: int) -> Entry | None:
        loaded = await self._source.load(instance_id)
        if loaded is None:
            return None
        if not self._unchanged_since(generation):
            return Entry(loaded, 0.0)  # something changed while we read: serve, do not keep
        return self.entries.put(loaded)

    async def addresses(self, address: str) -> list[str]:
        """Ids of the instances holding ``address``, kept under the same rule as entries."""
        ids = self.entries.addresses(address)
        if ids is None:
            generation = self._generation
            ids = await self._source.find_by_address(address)
            if self._unchanged_since(generation):
                self.entries.put_addresses(address, ids)
        return ids

    def discard(self, instance_id: str) -> None:
        self.entries.discard(instance_id)

    def _unchanged_since(self, generation: int) -> bool:
        return generation == self._generation and self.current()

    async def _watch(self) -> None:
        while True:
            try:
                revision = await self._source.wait_for_change(self._revision, WATCH_TIMEOUT)
                if revision != self._revision:
                    await self.sync(until=revision)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                _log.warning("change feed failed; dropping the cache", error=repr(exc))
                self.lost()
                await asyncio.sleep(WATCH_RETRY)
