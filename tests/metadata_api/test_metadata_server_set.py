"""``server set`` seen by the instance: properties in meta_data.json's ``meta`` on the very next
request after the PATCH is acknowledged, and tags in the EC2 tree once opted in; change
long-polls of the served API at its shutdown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import aiohttp
from metadata_cloud import build_cloud, signed

from cloudmeta.api.admin import build_admin_app
from cloudmeta.api.metadata import metadata_server
from cloudmeta.api.metadata.app import MAX_WAITS_PER_INSTANCE
from cloudmeta.api.server import ServedApp, serve
from cloudmeta.config import Config
from cloudmeta.inventory import Store

AUTH = {"Authorization": "Bearer cmt-admin-token"}


@asynccontextmanager
async def both_apps(config: Config, store: Store) -> AsyncIterator[tuple[str, str]]:
    """The admin API and the metadata API of one ``cloudmeta api`` over ``store``."""
    apps = [
        ServedApp("admin", build_admin_app, lambda _: ("127.0.0.1", 0)),
        ServedApp("metadata", metadata_server, lambda _: ("127.0.0.1", 0)),
    ]
    async with serve(config, apps, store=store) as bound:
        yield (f"http://127.0.0.1:{bound['admin'][1]}", f"http://127.0.0.1:{bound['metadata'][1]}")


async def test_server_set_is_read_by_the_next_request(
    make_config: Callable[..., Config],
) -> None:
    config = make_config(admin_token="cmt-admin-token")
    store = await Store.open(config)
    try:
        cloud = await build_cloud(store, servers=1)
        server_id = cloud.servers["a0"]
        headers = signed(server_id, cloud.project)
        async with both_apps(config, store) as (admin, meta), aiohttp.ClientSession() as http:

            async def read(path: str) -> tuple[int, bytes]:
                async with http.get(meta + path, headers=headers) as r:
                    return r.status, await r.read()

            async def patch(body: dict[str, object]) -> None:
                url = f"{admin}/v1/servers/{server_id}"
                async with http.patch(url, json={"server": body}, headers=AUTH) as r:
                    assert r.status == 200, await r.text()

            doc = "/openstack/latest/meta_data.json"
            assert json.loads((await read(doc))[1])["meta"] == {"role": "a"}  # now cached
            assert (await read("/latest/meta-data/tags/instance"))[0] == 404
            await patch({"metadata": {"tier": "1"}, "add_tags": ["blue", "green"]})
            assert json.loads((await read(doc))[1])["meta"] == {"role": "a", "tier": "1"}
            assert (await read("/latest/meta-data/tags/instance"))[0] == 404  # not opted in
            await patch({"instance_metadata_tags": "enabled"})
            assert await read("/latest/meta-data/tags/instance") == (200, b"blue\ngreen")
            assert await read("/latest/meta-data/tags/instance/blue") == (200, b"")
            await patch({"metadata": {"role": None}, "remove_tags": ["blue"]})
            assert json.loads((await read(doc))[1])["meta"] == {"tier": "1"}
            assert await read("/latest/meta-data/tags/instance") == (200, b"green")
            # The other instance's cached documents are untouched by these changes.
            other = signed(cloud.servers["b0"], cloud.project)
            async with http.get(meta + doc, headers=other) as r:
                assert json.loads(await r.read())["meta"] == {"role": "b"}
    finally:
        await store.close()


async def test_long_polls_answer_at_shutdown(make_config: Callable[..., Config]) -> None:
    """Stopping ``cloudmeta api`` answers every parked long-poll with the current document
    (within the stop's grace, instead of cutting the connections after it)."""
    config = make_config()
    store = await Store.open(config)
    try:
        cloud = await build_cloud(store, servers=1)
        headers = signed(cloud.servers["a0"], cloud.project)
        doc = "/openstack/latest/meta_data.json"
        async with aiohttp.ClientSession() as http:
            serving = both_apps(config, store)
            _, meta = await serving.__aenter__()
            try:
                async with http.get(meta + doc, headers=headers) as r:
                    etag = r.headers["ETag"]

                async def poll() -> tuple[int, str]:
                    url = f"{meta}{doc}?wait_for_change=true&last_etag={etag}"
                    async with http.get(url, headers=headers) as r:
                        await r.read()
                        return r.status, r.headers["ETag"]

                polls = [asyncio.create_task(poll()) for _ in range(MAX_WAITS_PER_INSTANCE)]
                probe = f"{meta}{doc}?wait_for_change=true&timeout_sec=0"
                for _ in range(500):  # until every slot waits: the probe is refused then
                    async with http.get(probe, headers=headers) as r:
                        if r.status == 429:
                            break
                else:
                    raise AssertionError("the long-polls never all waited")
            finally:
                await serving.__aexit__(None, None, None)
            assert await asyncio.gather(*polls) == [(200, etag)] * MAX_WAITS_PER_INSTANCE
    finally:
        await store.close()
