"""The agent's PortCache against an in-memory admin client and feed (no root, no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

from cloudmeta.adminclient import ChangeBatch, ChangesPage
from cloudmeta.adminclient.types import Change
from cloudmeta.agent.identity import Caller
from cloudmeta.agent.lookup import Lookup, Owner, PortCache

NET_A, NET_B, NET_C = "net-a", "net-b", "net-c"
MAC_1 = "fa:16:3e:00:00:01"


def _port(port_id: str, network: str, ip: str, device: str, mac: str = MAC_1) -> dict[str, Any]:
    return {
        "id": port_id,
        "network_id": network,
        "mac_address": mac,
        "fixed_ips": [{"ip_address": ip}],
        "device_id": device,
        "device_owner": "compute:nova",
        "project_id": "cmt-project",
    }


class FakeAdmin:
    """The AdminClient methods PortCache uses: list_ports, get_router and the feed's two."""

    def __init__(self) -> None:
        self.ports = [
            _port("p-a1", NET_A, "192.0.2.11", "vm-a1"),
            _port("p-b1", NET_B, "192.0.2.11", "vm-b1"),  # the same IP on another network
            _port("p-b2", NET_B, "192.0.2.12", "vm-b2", mac="fa:16:3e:00:00:02"),
        ]
        self.routers = {"r-1": {"id": "r-1", "interfaces": [{"network_id": NET_A}]}}
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.pages: asyncio.Queue[ChangesPage] = asyncio.Queue()
        self.polls = 0
        self.polled = asyncio.Condition()

    async def list_ports(self, **filters: Any) -> list[dict[str, Any]]:
        self.calls += 1
        networks = set(filters["network_id"])
        found = [p for p in self.ports if p["network_id"] in networks]
        if filters.get("mac_address"):
            found = [p for p in found if p["mac_address"] == filters["mac_address"]]
        if filters.get("ip_address"):
            ip = filters["ip_address"]
            found = [p for p in found if any(f["ip_address"] == ip for f in p["fixed_ips"])]
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return found

    async def get_router(self, router_id: str) -> dict[str, Any]:
        self.calls += 1
        return self.routers[router_id]

    async def revision(self) -> int:
        return 0

    async def changes(self, since: int, timeout: float = 30.0) -> ChangesPage:  # noqa: ASYNC109
        async with self.polled:
            self.polls += 1
            self.polled.notify_all()
        return await self.pages.get()

    async def wait_polls(self, count: int) -> None:
        """Until the feed asked for page ``count``: every batch before it was applied."""
        async with self.polled:
            await self.polled.wait_for(lambda: self.polls >= count)


def _cache(admin: FakeAdmin) -> PortCache:
    cache = PortCache(admin)  # type: ignore[arg-type]
    cache.feed_healthy = True
    return cache


def _port_change(port: dict[str, Any], op: str, revision: int = 1) -> Change:
    return {
        "revision": revision,
        "kind": "port",
        "id": port["id"],
        "op": op,
        "touches": {
            "network_ids": [port["network_id"]],
            "device_ids": [port["device_id"]],
            "device_owners": [port["device_owner"]],
            "mac_addresses": [port["mac_address"]],
            "ip_addresses": [f["ip_address"] for f in port["fixed_ips"]],
        },
    }


async def _warm(cache: PortCache) -> None:
    """Lookups by IP on A, on B, on A+C, by MAC on B, and router r-1 (5 fetches)."""
    ip = Caller("192.0.2.11")
    assert await cache.find([NET_A], ip) == Lookup(Owner("vm-a1", "cmt-project"), 1)
    assert await cache.find([NET_B], ip) == Lookup(Owner("vm-b1", "cmt-project"), 1)
    assert (await cache.find([NET_C, NET_A], ip)).matches == 1
    mac = Caller("fe80::1", "fa:16:3e:00:00:02")
    assert await cache.find([NET_B], mac) == Lookup(Owner("vm-b2", "cmt-project"), 1)
    assert await cache.router_networks("r-1") == (NET_A,)


async def test_identical_lookups_are_cached() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    await _warm(cache)
    await _warm(cache)
    assert admin.calls == 5 and len(cache) == 5


async def test_a_new_port_on_network_a_evicts_nothing_of_network_b() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    await _warm(cache)
    new = _port("p-new", NET_A, "192.0.2.50", "vm-new", mac="fa:16:3e:00:00:50")
    admin.ports.append(new)
    cache.apply(ChangeBatch(1, [_port_change(new, "create")]))
    assert len(cache) == 5
    await _warm(cache)
    assert admin.calls == 5  # every answer still from the cache


async def test_a_deleted_port_drops_only_its_network_and_address_keys() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    await _warm(cache)
    gone = admin.ports.pop(0)  # 192.0.2.11 on A
    cache.apply(ChangeBatch(1, [_port_change(gone, "delete")]))
    assert ("port", "192.0.2.11", NET_A) not in cache
    assert ("port", "192.0.2.11", NET_A, NET_C) not in cache  # a key over A and C too
    assert ("port", "192.0.2.11", NET_B) in cache  # the same IP on B: untouched
    assert ("port", "fa:16:3e:00:00:02", NET_B) in cache
    assert ("router", "r-1") in cache
    assert await cache.find([NET_A], Caller("192.0.2.11")) == Lookup(None, 0)


async def test_a_port_change_drops_the_mac_key_and_its_router() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    await _warm(cache)
    moved = dict(admin.ports[2])
    cache.apply(ChangeBatch(1, [_port_change(moved, "update")]))
    assert ("port", "fa:16:3e:00:00:02", NET_B) not in cache
    interface = _port("p-r1", NET_A, "192.0.2.1", "r-1", mac="fa:16:3e:00:00:0a")
    cache.apply(ChangeBatch(2, [_port_change(interface, "create")]))
    assert ("router", "r-1") not in cache
    assert ("port", "192.0.2.11", NET_A) in cache
    cache.apply(ChangeBatch(3, [{"revision": 3, "kind": "network", "id": NET_C, "op": "delete"}]))
    assert ("port", "192.0.2.11", NET_A, NET_C) not in cache
    assert ("port", "192.0.2.11", NET_A) in cache


async def test_resync_and_unknown_touches_drop_everything() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    await _warm(cache)
    cache.apply(ChangeBatch(1, [], resync=True))
    assert len(cache) == 0
    await _warm(cache)
    old: Change = {"revision": 2, "kind": "port", "id": "p-x", "op": "create"}  # no touches
    cache.apply(ChangeBatch(2, [old]))
    assert len(cache) == 0


async def test_subnet_server_and_keypair_changes_drop_nothing() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    await _warm(cache)
    changes: list[Change] = [
        {"revision": 1, "kind": kind, "id": "x", "op": "create", "touches": {}}
        for kind in ("subnet", "server", "keypair", "project")
    ]
    cache.apply(ChangeBatch(1, changes))
    assert len(cache) == 5


async def test_a_lookup_raced_by_a_change_of_its_key_is_served_but_not_kept() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    admin.gate = asyncio.Event()
    lookup = asyncio.create_task(cache.find([NET_A], Caller("192.0.2.11")))
    other = asyncio.create_task(cache.find([NET_B], Caller("192.0.2.12")))
    await admin.entered.wait()
    cache.apply(ChangeBatch(1, [_port_change(admin.ports[0], "delete")]))
    admin.ports.pop(0)
    admin.gate.set()
    assert (await lookup).owner == Owner("vm-a1", "cmt-project")  # what it read: served
    assert await other == Lookup(Owner("vm-b2", "cmt-project"), 1)
    assert ("port", "192.0.2.11", NET_A) not in cache  # ... but not kept
    assert ("port", "192.0.2.12", NET_B) in cache  # a lookup the change did not touch is


async def test_follow_applies_the_feed_batch_by_batch() -> None:
    admin = FakeAdmin()
    cache = PortCache(admin)  # type: ignore[arg-type]
    follower = asyncio.create_task(cache.follow())
    try:
        await admin.wait_polls(1)  # the starting resync was applied: trusted now
        assert cache.feed_healthy
        await _warm(cache)
        gone = admin.ports.pop(0)
        admin.pages.put_nowait(ChangesPage(1, [_port_change(gone, "delete")]))
        await admin.wait_polls(2)
        assert ("port", "192.0.2.11", NET_A) not in cache
        assert ("port", "192.0.2.11", NET_B) in cache
        admin.pages.put_nowait(ChangesPage(2, None))  # history lost: resync
        await admin.wait_polls(3)
        assert len(cache) == 0
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)


async def test_a_lookup_after_a_change_does_not_join_a_fetch_begun_before_it() -> None:
    admin = FakeAdmin()
    cache = _cache(admin)
    admin.gate = asyncio.Event()
    caller = Caller("192.0.2.11")
    early = asyncio.create_task(cache.find([NET_A], caller))
    await admin.entered.wait()  # it has read the port and is blocked
    cache.apply(ChangeBatch(1, [_port_change(admin.ports.pop(0), "delete")]))
    late = asyncio.create_task(cache.find([NET_A], caller))
    admin.gate.set()
    assert (await early).owner == Owner("vm-a1", "cmt-project")
    assert await late == Lookup(None, 0)  # its own fetch, after the delete
    assert admin.calls == 2
