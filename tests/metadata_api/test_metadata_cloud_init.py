"""Debian's cloud-init crawls the API (OpenStack datasource) through a signing forwarder."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from metadata_cloud import PUBLIC_KEY, USER_DATA, Api

# Runs under Debian's /usr/bin/python3; the EC2 half of the crawl is pointed at our base URL
# (cloud-init would otherwise ask 169.254.169.254 from the host).
CRAWL = r"""
import base64, json, sys
from cloudinit.sources import DataSourceOpenStack as ds
from cloudinit.sources.helpers import ec2, openstack

base = sys.argv[1]
openstack.MetadataReader._read_ec2_metadata = lambda self: ec2.get_instance_metadata(
    metadata_address=base, timeout=5, retries=0)
result = ds.read_metadata_service(base, timeout=5, retries=0)
md = result["metadata"]
print(json.dumps({
    "uuid": md["uuid"],
    "hostname": md["hostname"],
    "public_keys": md["public_keys"],
    "userdata": base64.b64encode(result["userdata"]).decode(),
    "ec2_instance_id": result["ec2-metadata"]["instance-id"],
    "ec2_keys": result["ec2-metadata"]["public-keys"],
    "links": [link["ethernet_mac_address"] for link in result["networkdata"]["links"]],
    "vendordata": result["vendordata"],
}))
"""


@pytest.fixture
async def forwarder(api: Api) -> AsyncIterator[str]:
    """Plays the metadata agent: adds a0's signed headers and relays the answer."""

    async def relay(request: web.Request) -> web.Response:
        headers = api.headers("a0")
        async with api.session.request(
            request.method, api.url + request.path_qs, headers=headers, data=await request.read()
        ) as resp:
            return web.Response(
                status=resp.status,
                body=await resp.read(),
                headers={"Content-Type": resp.headers.get("Content-Type", "text/plain")},
            )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", relay)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.mark.skipif(not shutil.which("cloud-init"), reason="Debian's cloud-init is not installed")
async def test_cloud_init_openstack_crawl(api: Api, forwarder: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/python3",
        "-c",
        CRAWL,
        forwarder,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    got = json.loads(out.decode().strip().splitlines()[-1])
    server_id = api.cloud.servers["a0"]
    assert got["uuid"] == server_id
    assert got["hostname"] == "cmt-a0.novalocal"
    assert got["public_keys"] == {"cmt-key": PUBLIC_KEY}
    assert base64.b64decode(got["userdata"]) == USER_DATA
    assert got["ec2_instance_id"].startswith("i-")
    assert got["ec2_keys"] == {"cmt-key": PUBLIC_KEY}
    assert len(got["links"]) == 1
    async with (
        aiohttp.ClientSession() as session,
        session.get(forwarder + "/latest/meta-data/mac") as r,
    ):
        assert got["links"] == [await r.text()]
