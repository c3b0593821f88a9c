"""Change long-polls against an in-memory MetadataSource: who is woken, and when.

Interleavings are driven by the fake source's events and by yielding to the loop
(``asyncio.sleep(0)``: a scheduling step, not a clock), never by timed sleeps.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from metadata_fakes import FakeSource, instance

from cloudmeta.api.metadata.app import (
    MAX_WAITS_PER_INSTANCE,
    MetadataService,
    etag_of,
    none_match,
)
from cloudmeta.api.metadata.source import Changed
from cloudmeta.config import Config
from cloudmeta.documents import Body, Instance, Seeded
from cloudmeta.http import WireResponse
from cloudmeta.signing import sign_instance_id

SECRET = "cmt-test-secret"
PATH = "/openstack/latest/meta_data.json"


def _request(
    server: Instance, query: str = "", path: str = PATH, **headers: str
) -> web.BaseRequest:
    signed = {
        "X-Instance-ID": server.id,
        "X-Tenant-ID": server.project_id,
        "X-Instance-ID-Signature": sign_instance_id(SECRET.encode(), server.id),
        "X-Forwarded-For": "192.0.2.10",
    }
    return make_mocked_request("GET", path + query, headers={**signed, **headers})


async def _get(
    service: MetadataService, server: Instance, query: str = "", path: str = PATH
) -> web.Response | WireResponse:
    """The answer as a test reads it (``body``, ``headers``): aiohttp's, or the cached
    documents' pre-serialised form."""
    response = await service.handle(_request(server, query, path))
    assert isinstance(response, web.Response | WireResponse)
    return response


async def _until(check: Callable[[], bool]) -> None:
    """Yield to the loop until ``check()`` holds (bounded: a bug fails, never hangs)."""
    for _ in range(10000):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("the expected state never came")


@pytest.fixture
async def two(
    make_config: Callable[..., Config],
) -> AsyncIterator[tuple[FakeSource, MetadataService]]:
    source = FakeSource([instance("cmt-a", "192.0.2.10"), instance("cmt-b", "192.0.2.11")])
    service = MetadataService(make_config(), source)
    await service.start()
    try:
        yield source, service
    finally:
        await service.stop()


def _set_meta(source: FakeSource, server_id: str, **meta: str) -> None:
    """An admin's ``server set --property``: the new record, then its change committed."""
    source.servers[server_id] = replace(source.servers[server_id], metadata=meta)
    source.commit(Changed("server", server_id, {}))


def test_etags_strong_for_bytes_weak_for_seeded_documents() -> None:
    assert etag_of(Body(b"a")) == etag_of(Body(b"a")) != etag_of(Body(b"b"))
    assert etag_of(Body(b"a")).startswith('"')
    seeded = etag_of(Seeded(b'{"random_seed": "', b'"}'))
    assert seeded.startswith('W/"') and seeded != etag_of(Seeded(b'{"random_seed": "', b'", }'))
    strong = etag_of(Body(b"a"))
    assert none_match(strong, strong) and none_match("*", strong)
    assert none_match(f'"x", W/{strong}', strong)  # weak comparison, lists
    assert not none_match('"x"', strong) and not none_match(None, strong)


async def test_a_poll_wakes_on_its_instance_change_only(
    two: tuple[FakeSource, MetadataService],
) -> None:
    source, service = two
    a, b = source.servers["cmt-a"], source.servers["cmt-b"]
    first = await _get(service, a)
    etag = first.headers["ETag"]
    assert etag.startswith('W/"')
    assert (await service.handle(_request(a, **{"If-None-Match": etag}))).status == 304
    poll = asyncio.create_task(_get(service, a, f"?wait_for_change=true&last_etag={etag}"))
    await _until(lambda: service.cache.waiting() == 1)
    _set_meta(source, b.id, role="other")
    await _until(lambda: service.cache.revision == source.revision_now)  # applied
    await asyncio.sleep(0)
    assert not poll.done() and service.cache.waiting() == 1  # B's change left A waiting
    _set_meta(source, a.id, role="db")
    answer = await poll
    assert answer.status == 200 and answer.headers["ETag"] != etag
    assert answer.body is not None and json.loads(bytes(answer.body))["meta"] == {"role": "db"}
    assert service.cache.waiting() == 0


async def test_the_ec2_tree_polls_the_same_way(two: tuple[FakeSource, MetadataService]) -> None:
    """An EC2 document (AWS's instance tags) has a strong ETag, answers 304 to it, and its
    long-poll is woken by the server's change like the OpenStack tree's."""
    source, service = two
    a = replace(source.servers["cmt-a"], tags=("blue",), metadata_tags=True)
    source.servers[a.id] = a
    tags = "/latest/meta-data/tags/instance"
    first = await _get(service, a, path=tags)
    etag = first.headers["ETag"]
    assert (first.status, first.body, etag[:1]) == (200, b"blue", '"')
    assert (await service.handle(_request(a, "", tags, **{"If-None-Match": etag}))).status == 304
    poll = asyncio.create_task(_get(service, a, f"?wait_for_change=true&last_etag={etag}", tags))
    await _until(lambda: service.cache.waiting() == 1)
    source.servers[a.id] = replace(a, tags=("blue", "green"))
    source.commit(Changed("server", a.id, {}))
    answer = await asyncio.wait_for(poll, 10)  # a bound so that a bug fails, not hangs
    assert (answer.status, answer.body) == (200, b"blue\ngreen")
    assert answer.headers["ETag"] not in (etag, "") and service.cache.waiting() == 0


async def test_a_change_while_the_poll_loads_is_not_missed(
    two: tuple[FakeSource, MetadataService],
) -> None:
    """The poll's load reads the old record, a change lands before it returns: the poll must
    not wait for a next change with the stale document in hand."""
    source, service = two
    a = source.servers["cmt-a"]
    source.hold_loads()
    poll = asyncio.create_task(_get(service, a, "?wait_for_change=true&timeout_sec=300"))
    await source.load_entered.wait()  # the poll's load has read the old record and blocks
    generation = service.cache.generation
    _set_meta(source, a.id, role="db")
    await _until(lambda: service.cache.generation != generation)  # invalidation applied
    source.release_loads()
    answer = await asyncio.wait_for(poll, 10)  # a bound so that a bug fails, not hangs
    assert answer.body is not None and json.loads(bytes(answer.body))["meta"] == {"role": "db"}


async def test_a_change_while_a_woken_poll_reloads_is_not_missed(
    two: tuple[FakeSource, MetadataService],
) -> None:
    """A parked poll is woken by a change that leaves its document as it was (its network's);
    its reload reads the old record, and the real change lands before the reload returns:
    the entry it holds is not kept, and the poll must re-read rather than wait."""
    source, service = two
    a = source.servers["cmt-a"]
    etag = (await _get(service, a)).headers["ETag"]
    poll = asyncio.create_task(_get(service, a, f"?wait_for_change=true&last_etag={etag}"))
    await _until(lambda: service.cache.waiting() == 1)
    source.hold_loads()
    source.load_entered.clear()
    source.commit(Changed("network", "net-a", {}))  # drops A's entry, same document
    await source.load_entered.wait()  # the woken poll reloads: old record read, blocked
    generation = service.cache.generation
    _set_meta(source, a.id, role="db")
    await _until(lambda: service.cache.generation != generation)
    source.release_loads()
    answer = await asyncio.wait_for(poll, 10)  # a bound so that a bug fails, not hangs
    assert answer.body is not None and json.loads(bytes(answer.body))["meta"] == {"role": "db"}


async def test_waits_are_capped_per_instance(two: tuple[FakeSource, MetadataService]) -> None:
    source, service = two
    a, b = source.servers["cmt-a"], source.servers["cmt-b"]
    polls = [
        asyncio.create_task(_get(service, a, "?wait_for_change=true"))
        for _ in range(MAX_WAITS_PER_INSTANCE)
    ]
    await _until(lambda: service.cache.waiting() == MAX_WAITS_PER_INSTANCE)
    refused = await _get(service, a, "?wait_for_change=true")
    assert refused.status == 429 and refused.headers["Retry-After"] == "1"
    other = asyncio.create_task(_get(service, b, "?wait_for_change=true"))  # B has its own
    await _until(lambda: service.cache.waiting() == MAX_WAITS_PER_INSTANCE + 1)
    assert (await _get(service, a)).status == 200  # plain reads are not counted
    # Shutdown: every waiter answers now with the current document, and none waits again.
    etag = (await _get(service, a)).headers["ETag"]
    service.release_waiters()
    answers = await asyncio.gather(*polls, other)
    assert [r.status for r in answers] == [200] * (MAX_WAITS_PER_INSTANCE + 1)
    assert {r.headers["ETag"] for r in answers[:-1]} == {etag}
    late = await asyncio.wait_for(_get(service, a, "?wait_for_change=true"), 10)
    assert late.status == 200 and service.cache.waiting() == 0


async def test_bad_parameters_and_a_deleted_server(
    two: tuple[FakeSource, MetadataService],
) -> None:
    source, service = two
    a = source.servers["cmt-a"]
    for query in ("?wait_for_change=true&timeout_sec=x", "?wait_for_change=true&timeout_sec=-1"):
        answer = await _get(service, a, query)
        assert answer.status == 400 and b"timeout_sec" in bytes(answer.body or b"")
    # timeout_sec=0 answers at once with the document; above the cap it is capped, not refused.
    assert (await _get(service, a, "?wait_for_change=true&timeout_sec=0")).status == 200
    poll = asyncio.create_task(_get(service, a, "?wait_for_change=true&timeout_sec=99999"))
    await _until(lambda: service.cache.waiting() == 1)
    source.delete(a.id)
    assert (await poll).status == 404
