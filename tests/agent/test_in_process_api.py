"""The all-in-one's agent reaches the metadata API of its own process in-process: a request
without a body is answered by the API's handler under the signed identity, with no loopback
HTTP exchange; one with a body still goes over HTTP (nova_metadata_port)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import aiohttp

from cloudmeta.adminclient import AdminClient
from cloudmeta.services import ServiceSet, running_services

TOKEN = "cmt-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_agent_answers_through_the_api_of_its_own_process(make_config: Any) -> None:
    admin_port = _free_port()
    config = make_config(
        admin_token=TOKEN,
        admin={"listen": "127.0.0.1", "port": admin_port},
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": _free_port()},
        admin_url=f"http://127.0.0.1:{admin_port}",
        metadata_proxy_mode="process",
        nova_metadata_port=_free_port(),  # nothing listens there: HTTP would be a 503
    )
    async with running_services(config, ServiceSet(api=True, metadata_agent=True)):
        async with AdminClient(url=f"http://127.0.0.1:{admin_port}", token=TOKEN) as client:
            project = await client.create_project("cmt-local")
            net = await client.create_network("cmt-local", project_id=project["id"])
            await client.create_subnet(net["id"], "192.0.2.0/24", project_id=project["id"])
            server = await client.create_server(
                "cmt-local-vm", [{"network_id": net["id"]}], project_id=project["id"]
            )
            port = await client.get_port(server["ports"][0])
        headers = {
            "X-Forwarded-For": port["fixed_ips"][0]["ip_address"],
            "X-Neutron-Network-ID": net["id"],
        }
        connector = aiohttp.UnixConnector(path=str(config.proxy_socket_path))
        async with aiohttp.ClientSession(connector=connector) as session:
            url = "http://agent/openstack/latest/meta_data.json"
            spoofed = {**headers, "X-Instance-ID": "cmt-other", "X-Tenant-ID": "cmt-other"}
            async with session.get(url, headers=spoofed) as resp:
                assert resp.status == 200
                assert json.loads(await resp.read())["uuid"] == server["id"]
                assert resp.headers["ETag"].startswith('W/"')
            async with session.get(url.replace("meta_data", "nothing"), headers=headers) as resp:
                assert resp.status == 404
            started = time.monotonic()  # a change long-poll waits in-process too
            async with session.get(
                f"{url}?wait_for_change=true&timeout_sec=1", headers=headers
            ) as resp:
                assert resp.status == 200
            assert 0.9 <= time.monotonic() - started < 5
            password = "http://agent/openstack/latest/password"
            async with session.post(password, data=b"cmt-pw", headers=headers) as resp:
                assert resp.status == 503  # a body goes over HTTP, to nova_metadata_port


async def _forwarded(make_config: Any, local: Any, path: str = "/openstack") -> Any:
    from aiohttp.test_utils import make_mocked_request

    from cloudmeta.agent.forward import Forwarder
    from cloudmeta.agent.lookup import Owner

    forwarder = Forwarder(make_config(nova_metadata_timeout=0.2), local)
    request = make_mocked_request("GET", path, headers={"X-Instance-ID": "cmt-spoofed"})
    return await forwarder.forward_local(request, "192.0.2.10", Owner("cmt-i", "cmt-p"))


async def test_local_answers_map_as_over_http(make_config: Any) -> None:
    """The agent's identity is handed over beside the request as it came (the API reads no
    identity header of it); 5xx and a slow API become 503 within the timeout."""
    from aiohttp import web

    from cloudmeta.signing import InstanceIdentity

    seen: list[Any] = []

    async def ok(request: web.BaseRequest, identity: InstanceIdentity) -> web.StreamResponse:
        seen.append((identity, request.headers.getall("X-Instance-ID")))
        return web.Response(text="ok")

    async def failing(request: web.BaseRequest, _: InstanceIdentity) -> web.StreamResponse:
        return web.Response(status=500)

    async def slow(request: web.BaseRequest, _: InstanceIdentity) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="late")

    assert (await _forwarded(make_config, ok)).status == 200
    assert seen == [(InstanceIdentity("cmt-i", "cmt-p", "192.0.2.10"), ["cmt-spoofed"])]
    assert (await _forwarded(make_config, failing)).status == 503
    started = time.monotonic()
    assert (await _forwarded(make_config, slow)).status == 503
    assert time.monotonic() - started < 2
