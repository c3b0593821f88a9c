"""Per-instance cache of rendered answers, dropped by TTL or by the inventory's change feed.

An entry holds the instance record and, per request path, the bytes already rendered for it,
so a hot instance costs a dict lookup. An index from inventory objects to the instances built
from them turns a change record into the entries to drop; a change of an object the index does
not know (a new port, a new key pair) could concern anyone, so it drops everything.
"""

from __future__ import annotations

import time
from typing import Any

from cloudmeta.documents import Instance

from .source import ChangeKey, Loaded

__all__ = ["Entry", "InstanceCache"]

# Bound on rendered paths kept per instance (a client probing random paths cannot grow it).
MAX_PATHS = 128
# Kinds whose changes can alter a document; others (project, router) are ignored.
_RELEVANT = frozenset({"server", "port", "subnet", "network", "keypair"})


class Entry:
    __slots__ = ("depends_on", "expires", "has_v4", "instance", "responses", "tokens_required")

    def __init__(self, loaded: Loaded, expires: float, tokens_required: bool) -> None:
        self.instance: Instance = loaded.instance
        self.depends_on = loaded.depends_on
        self.expires = expires
        self.tokens_required = tokens_required
        # Without an IPv4 fixed IP, local-ipv4 is the caller's address: answers vary by caller.
        self.has_v4 = bool(loaded.instance.fixed_ips(4))
        self.responses: dict[Any, Any] = {}

    def remember(self, key: Any, value: Any) -> None:
        if len(self.responses) < MAX_PATHS:
            self.responses[key] = value


class InstanceCache:
    """Entries by instance id plus address -> instance ids (source-ip identity)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, Entry] = {}
        self._index: dict[ChangeKey, set[str]] = {}
        self._addresses: dict[str, tuple[list[str], float]] = {}

    def get(self, instance_id: str) -> Entry | None:
        entry = self._entries.get(instance_id)
        if entry is not None and entry.expires < time.monotonic():
            self._drop(instance_id)
            return None
        return entry

    def put(self, loaded: Loaded, tokens_required: bool) -> Entry:
        instance_id = loaded.instance.id
        self._drop(instance_id)
        entry = Entry(loaded, time.monotonic() + self.ttl, tokens_required)
        if self.ttl > 0:
            self._entries[instance_id] = entry
            for key in loaded.depends_on:
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

    def invalidate(self, changes: list[ChangeKey] | None) -> None:
        """Drop what ``changes`` touch; None (history lost) drops everything."""
        if changes is None:
            self.clear()
            return
        for kind, object_id in changes:
            if kind not in _RELEVANT:
                continue
            if kind in ("port", "server"):
                self._addresses.clear()
            holders = self._index.get((kind, object_id))
            if holders is None and kind != "server":
                self.clear()
                return
            for instance_id in list(holders or ()):
                self._drop(instance_id)
            if kind == "server":
                self._drop(object_id)

    def clear(self) -> None:
        self._entries.clear()
        self._index.clear()
        self._addresses.clear()

    def _drop(self, instance_id: str) -> None:
        entry = self._entries.pop(instance_id, None)
        if entry is None:
            return
        for key in entry.depends_on:
            holders = self._index.get(key)
            if holders is not None:
                holders.discard(instance_id)
                if not holders:
                    del self._index[key]

    def __len__(self) -> int:
        return len(self._entries)
