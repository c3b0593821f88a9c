"""The metadata API's cache against an in-memory MetadataSource: the sync protocol.

Every interleaving is driven by asyncio events held by the fake source, never by sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from aiohttp.test_utils import make_mocked_request
from metadata_fakes import FakeSource, instance

from cloudmeta.api.metadata.app import MetadataService
from cloudmeta.config import Config
from cloudmeta.documents import Instance
from cloudmeta.signing import sign_instance_id

SECRET = "cmt-test-secret"
PATH = "/openstack/latest/meta_data.json"


def _request(server: Instance) -> object:
    headers = {
        "X-Instance-ID": server.id,
        "X-Tenant-ID": server.project_id,
        "X-Instance-ID-Signature": sign_instance_id(SECRET.encode(), server.id),
        "X-Forwarded-For": "192.0.2.10",
    }
    return make_mocked_request("GET", PATH, headers=headers)


async def _get(service: MetadataService, server: Instance) -> int:
    response = await service.handle(_request(server))  # type: ignore[arg-type]
    return response.status


async def _service(make_config: Callable[..., Config], source: FakeSource) -> MetadataService:
    service = MetadataService(make_config(), source)
    await service.start()
    return service


@dataclass
class World:
    """One server in a fake source, and a started service over it."""

    server: Instance
    source: FakeSource
    service: MetadataService

    async def get(self) -> int:
        return await _get(self.service, self.server)


@pytest.fixture
async def world(make_config: Callable[..., Config]) -> AsyncIterator[World]:
    server = instance("cmt-vm-1", "192.0.2.10", network="net-a")
    source = FakeSource([server])
    service = await _service(make_config, source)
    try:
        yield World(server, source, service)
    finally:
        await service.stop()


async def test_a_request_inside_the_sync_window_does_not_serve_a_deleted_server(
    world: World,
) -> None:
    """The interleaving that failed: sync published the new token, then awaited the changes;
    a request landing in between took the cache as current and served the deleted server."""
    assert await world.get() == 200  # cached now
    world.source.hold_changes()  # changes_since blocks until released
    world.source.delete(world.server.id)  # the feed watcher wakes up and syncs
    await world.source.changes_entered.wait()  # ... and is inside changes_since now
    world.source.watch_token_reads()
    first = asyncio.create_task(world.get())
    second = asyncio.create_task(world.get())
    await world.source.token_read.wait()  # the requests have looked at the token
    world.source.release_changes()
    assert await first == 404
    assert await second == 404
    assert world.source.changes_calls == 1  # the queued requests did not redo the same read


async def test_a_load_that_raced_a_delete_is_served_but_not_kept(world: World) -> None:
    world.source.hold_loads()
    request = asyncio.create_task(world.get())
    await world.source.load_entered.wait()  # the load has read the server, then blocks
    world.source.delete(world.server.id)
    world.source.release_loads()
    assert await request == 200  # it answered from what it read: served...
    assert world.server.id not in world.service.cache.entries  # ... but not kept
    assert await world.get() == 404


async def test_every_worker_answers_from_the_new_state_on_its_next_request(
    make_config: Callable[..., Config],
) -> None:
    """Read-your-writes: two workers (two services) over one host's source; after a write
    is committed (the token moved), each worker's very next request sees it."""
    server = instance("cmt-vm-1", "192.0.2.10")
    source = FakeSource([server])
    workers = [await _service(make_config, source) for _ in range(2)]
    try:
        for worker in workers:
            assert await _get(worker, server) == 200
        source.delete(server.id)
        for worker in workers:
            assert await _get(worker, server) == 404
    finally:
        for worker in workers:
            await worker.stop()


async def test_concurrent_misses_share_one_load(world: World) -> None:
    world.source.hold_loads()
    requests = [asyncio.create_task(world.get()) for _ in range(5)]
    await world.source.load_entered.wait()
    world.source.release_loads()
    assert await asyncio.gather(*requests) == [200] * 5
    assert world.source.loads == 1
    assert world.server.id in world.service.cache.entries


async def test_the_feed_watcher_applies_writes_of_other_hosts(world: World) -> None:
    """A write on another host moves no local token: the watcher's sync drops the entry."""
    assert await world.get() == 200
    world.source.delete(world.server.id, here=False)
    await world.source.changes_entered.wait()  # the watcher read the changes (and applied them)
    assert world.server.id not in world.service.cache.entries
    assert world.service.cache.revision == world.source.revision_now
    assert await world.get() == 404


async def test_a_request_after_a_write_does_not_join_a_load_begun_before_it(
    world: World,
) -> None:
    """Single flight must not hand a later request the answer of a load that read the
    inventory before the write that request already knows of (read-your-writes)."""
    world.source.hold_loads()
    early = asyncio.create_task(world.get())
    await world.source.load_entered.wait()  # it has read the server and is blocked
    world.source.delete(world.server.id)  # acknowledged: from now on every request must see it
    late = asyncio.create_task(world.get())
    world.source.release_loads()
    assert await early == 200  # it began before the delete
    assert await late == 404
