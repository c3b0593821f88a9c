"""Who asks: Nova's signed headers (each error code, in Nova's order) and source-ip identity."""

from __future__ import annotations

import json
from collections.abc import Callable

import aiohttp
import pytest
from metadata_cloud import Api, build_cloud, signed

from cloudmeta.config import Config
from cloudmeta.inventory import Store
from support.serving import shipped


async def test_root_needs_no_identity(api: Api) -> None:
    status, body, headers = await api.get("/", name=None)
    assert status == 200
    assert body.endswith(b"2009-04-04\nlatest")
    assert headers["Content-Type"] == "text/plain; charset=UTF-8"


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("X-Instance-ID", "X-Instance-ID header is missing from request."),
        ("X-Instance-ID-Signature", "X-Instance-ID-Signature header is missing from request."),
        ("X-Tenant-ID", "X-Tenant-ID header is missing from request."),
    ],
)
async def test_missing_header_is_400(api: Api, drop: str, message: str) -> None:
    headers = api.headers("a0")
    del headers[drop]
    async with api.session.get(api.url + "/openstack/latest/meta_data.json", headers=headers) as r:
        assert r.status == 400
        assert message in await r.text()


async def test_missing_headers_reported_in_nova_order(api: Api) -> None:
    async with api.session.get(api.url + "/latest/meta-data/", headers={"X-Tenant-ID": "x"}) as r:
        assert r.status == 400
        assert "X-Instance-ID header is missing" in await r.text()


@pytest.mark.parametrize("header", ["X-Instance-ID", "X-Tenant-ID"])
async def test_multiple_headers_are_400(api: Api, header: str) -> None:
    headers = [*api.headers("a0").items(), (header, "other")]
    async with api.session.get(api.url + "/latest/meta-data/", headers=headers) as r:
        assert r.status == 400
        assert f"Multiple {header} headers found within request." in await r.text()


async def test_bad_signature_is_403(api: Api) -> None:
    headers = api.headers("a0")
    headers["X-Instance-ID-Signature"] = "0" * 64
    status, body, _ = await api.get("/latest/meta-data/", name=None, headers=headers)
    assert (status, b"Invalid proxy request signature." in body) == (403, True)
    headers["X-Instance-ID-Signature"] = ""
    assert (await api.get("/latest/meta-data/", name=None, headers=headers))[0] == 403
    # A signature made for another instance does not open this one.
    headers = api.headers("a0")
    headers["X-Instance-ID"] = api.cloud.servers["b0"]
    assert (await api.get("/latest/meta-data/", name=None, headers=headers))[0] == 403


async def test_unknown_instance_and_project_mismatch_are_404(api: Api) -> None:
    ghost = signed("00000000-0000-0000-0000-000000000000", api.cloud.project)
    assert (await api.get("/latest/meta-data/", name=None, headers=ghost))[0] == 404
    other_project = signed(api.cloud.servers["a0"], "not-the-project")
    assert (await api.get("/latest/meta-data/", name=None, headers=other_project))[0] == 404


async def test_overlapping_ips_resolve_to_the_signed_instance(api: Api) -> None:
    """a0 and b0 both hold 192.0.2.10 on different networks; each gets its own document."""
    seen = {}
    for name in ("a0", "b0"):
        status, body, _ = await api.get("/openstack/latest/meta_data.json", name=name)
        assert status == 200
        data = json.loads(body)
        seen[name] = data
        assert data["uuid"] == api.cloud.servers[name]
        assert data["name"] == f"cmt-{name}"
        assert data["meta"] == {"role": name[0]}
        net = json.loads((await api.get("/openstack/latest/network_data.json", name=name))[1])
        assert net["networks"][0]["network_id"] == api.cloud.networks[name[0]]
        ipv4 = (await api.get("/latest/meta-data/local-ipv4", name=name))[1]
        assert ipv4 == b"192.0.2.10"
    assert seen["a0"]["uuid"] != seen["b0"]["uuid"]


async def test_source_ip_identity(store: Store, make_config: Callable[..., Config]) -> None:
    cloud = await build_cloud(store, servers=1)
    config = make_config(api={"identity": "source-ip"})
    async with shipped(config, store, "metadata") as port:
        url = f"http://127.0.0.1:{port}/latest/meta-data/"
        # 127.0.0.1 is nobody's fixed IP: 404 without a trace of anyone's data.
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            assert r.status == 404
            assert cloud.servers["a0"] not in await r.text()
    # Several instances on one address (overlapping networks) is refused too.
    from cloudmeta.api.metadata.loader import StoreSource

    assert len(await StoreSource(store).find_by_address("192.0.2.10")) == 2
