"""Password, tokens, vendordata, signed identity document and bad input, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from metadata_cloud import USER_DATA, Api

from cloudmeta.api.metadata.signing import CERT_FILE, verify_signature
from cloudmeta.api.metadata.tokens import TokenAuthority

TOKEN = "X-aws-ec2-metadata-token"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"


async def _post(api: Api, path: str, body: bytes, name: str = "a0") -> tuple[int, str]:
    async with api.session.post(api.url + path, data=body, headers=api.headers(name)) as r:
        return r.status, await r.text()


async def test_password_is_written_once(api: Api) -> None:
    path = "/openstack/latest/password"
    assert (await api.get(path))[:2] == (200, b"")
    assert (await _post(api, path, b"x" * 1021))[0] == 400
    assert (await _post(api, path, b"s3cret"))[0] == 200
    assert (await api.get(path))[1] == b"s3cret"
    assert (await _post(api, path, b"again"))[0] == 409
    # Concurrent first writes: exactly one wins, atomically in the store.
    path_b = "/openstack/2013-04-04/password"
    results = await asyncio.gather(*(_post(api, path_b, f"p{i}".encode(), "b0") for i in range(8)))
    assert sorted(status for status, _ in results) == [200] + [409] * 7
    assert (await api.get("/openstack/2012-08-10/password"))[0] == 404
    async with api.session.put(api.url + path, headers=api.headers("a0")) as r:
        assert r.status == 405
        assert set(r.headers["Allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_password_cleared_by_the_store_can_be_posted_again(api: Api) -> None:
    path = "/openstack/latest/password"
    assert (await _post(api, path, b"one"))[0] == 200
    assert await api.store.clear_password(api.cloud.servers["a0"])
    assert (await api.get(path))[1] == b""  # the very next request sees the change
    assert (await _post(api, path, b"two"))[0] == 200
    assert (await api.get(path))[1] == b"two"


async def test_cache_dropped_on_change_within_one_request(api: Api) -> None:
    path = "/openstack/latest/meta_data.json"
    first = json.loads((await api.get(path))[1])
    assert first["public_keys"]
    from cloudmeta.inventory import compute_ops

    await api.store.transact(lambda tx: compute_ops.delete_keypair(tx, api.cloud.keypair))
    after = json.loads((await api.get(path))[1])
    assert "public_keys" not in after
    await api.store.transact(lambda tx: compute_ops.delete_server(tx, api.cloud.servers["a0"]))
    assert (await api.get(path))[0] == 404


async def test_hot_instance_does_not_touch_the_database(api: Api) -> None:
    path = "/openstack/latest/meta_data.json"
    assert (await api.get(path))[0] == 200
    await api.store.engine.dispose()
    queries: list[str] = []
    from sqlalchemy import event

    def count(*args: Any) -> None:
        queries.append(str(args[2]))

    event.listen(api.store.engine.sync_engine, "before_cursor_execute", count)
    try:
        for _ in range(20):
            assert (await api.get(path))[0] == 200
            assert (await api.get("/latest/meta-data/hostname"))[0] == 200
    finally:
        event.remove(api.store.engine.sync_engine, "before_cursor_execute", count)
    # The change feed's poll may run meanwhile (one revision read); no instance read does.
    assert not [q for q in queries if "servers" in q or "ports" in q]


async def test_random_seed_is_fresh_per_request(api: Api) -> None:
    path = "/openstack/latest/meta_data.json"
    seeds = [json.loads((await api.get(path))[1])["random_seed"] for _ in range(3)]
    assert seeds[0] != seeds[1] != seeds[2] != seeds[0]  # two consecutive answers differ
    assert all(len(base64.b64decode(seed, validate=True)) == 512 for seed in seeds)  # Nova's


async def test_tokens(api: Api) -> None:
    url = api.url + "/latest/api/token"
    for bad in ("0", "21601", "x"):
        async with api.session.put(url, headers=api.headers("a0", **{TTL: bad})) as r:
            assert r.status == 400
    async with api.session.put(url, headers=api.headers("a0")) as r:
        assert r.status == 400  # the TTL header is required
    async with api.session.get(url, headers=api.headers("a0", **{TTL: "60"})) as r:
        assert (r.status, r.headers["Allow"]) == (405, "PUT")
    async with api.session.put(url, headers=api.headers("a0", **{TTL: "21600"})) as r:
        assert r.status == 200
        assert r.headers[TTL] == "21600"
        token = await r.text()
    ok = await api.get("/latest/meta-data/hostname", headers={TOKEN: token})
    assert ok[0] == 200
    # Another instance presenting a0's token: refused, and nothing of a0 in the answer.
    foreign = await api.get("/latest/meta-data/hostname", name="b0", headers={TOKEN: token})
    assert foreign[0] == 401
    assert b"cmt-a0" not in foreign[1]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert (await api.get("/latest/meta-data/", headers={TOKEN: forged}))[0] == 401
    assert (await api.get("/latest/meta-data/", headers={TOKEN: "garbage!"}))[0] == 401


def test_token_expiry_and_restart(tmp_path: Path) -> None:
    authority = TokenAuthority.from_state(tmp_path)
    token = authority.issue("i-1", 1, now=1000.0)
    authority.check(token, "i-1", now=1000.5)
    from cloudmeta.api.metadata import MetadataError

    with pytest.raises(MetadataError) as expired:
        authority.check(token, "i-1", now=1002.0)
    assert expired.value.status == 401
    # The key is kept in state_path: a restarted API accepts the token within its TTL.
    TokenAuthority.from_state(tmp_path).check(token, "i-1", now=1000.5)
    with pytest.raises(MetadataError):
        TokenAuthority(b"another key").check(token, "i-1", now=1000.5)


@pytest.fixture
def required_tokens(api_config: dict[str, Any]) -> None:
    api_config["http_tokens"] = "required"


@pytest.mark.usefixtures("required_tokens")
async def test_tokens_required_globally(api: Api) -> None:
    assert (await api.get("/latest/meta-data/hostname"))[0] == 401
    assert (await api.get("/", name=None))[0] == 200  # the version list stays open
    async with api.session.put(
        api.url + "/latest/api/token", headers=api.headers("a0", **{TTL: "5"})
    ) as r:
        token = await r.text()
    assert (await api.get("/latest/meta-data/hostname", headers={TOKEN: token}))[0] == 200


async def test_tokens_required_per_server(api: Api) -> None:
    from cloudmeta.inventory import compute_ops
    from cloudmeta.inventory.specs import NetworkRequest, ServerCreate

    async def create(tx: Any) -> str:
        server = await compute_ops.create_server(
            tx,
            ServerCreate(
                name="cmt-strict",
                project_id=api.cloud.project,
                metadata={"http_tokens": "required"},
                networks=[NetworkRequest(network_id=api.cloud.networks["a"])],
            ),
        )
        return server.id

    api.cloud.servers["strict"] = await api.store.transact(create)
    assert (await api.get("/latest/meta-data/hostname", name="strict"))[0] == 401
    assert (await api.get("/latest/meta-data/hostname", name="a0"))[0] == 200


async def test_identity_document_is_signed(api: Api, state_dir: Path) -> None:
    base = "/latest/dynamic/instance-identity/"
    status, document, _ = await api.get(base + "document")
    assert status == 200
    assert json.loads(document)["uuid"] == api.cloud.servers["a0"]
    signature = (await api.get(base + "signature"))[1]
    cert = (state_dir / CERT_FILE).read_bytes()
    assert verify_signature(cert, document, signature)
    assert not verify_signature(cert, document.replace(b"x86_64", b"arm64"), signature)
    other = (await api.get(base + "document", name="b0"))[1]
    assert not verify_signature(cert, other, signature)
    pkcs7 = (await api.get(base + "pkcs7"))[1]
    assert pkcs7.startswith(b"MII")


async def test_bad_input_never_500(api: Api) -> None:
    for path in (
        "/latest/meta-data/nope",
        "/openstack/latest/../../../../etc/passwd",
        "/openstack/%2e%2e/%2e%2e/etc/passwd",
        "//openstack//9999-01-01/",
        "/latest/meta-data/hostname/x/y",
    ):
        status, body, _ = await api.get(path)
        assert status in (400, 404), path
        assert b"Traceback" not in body
    status, _, _ = await api.get("/latest/" + "a" * 1100)
    assert status == 400
    many = {f"X-Cmt-{i}": "v" for i in range(200)}
    status, _, _ = await api.get("/latest/meta-data/", headers=many)
    assert status in (400, 431)
    async with api.session.delete(api.url + "/latest/meta-data/", headers=api.headers("a0")) as r:
        assert (r.status, r.headers["Allow"]) == (405, "GET, HEAD")
    assert (await api.get("/openstack/latest/user_data"))[1] == USER_DATA
    # Spellings of the signature paths name the same document (they once hit an assert: 500).
    base = "/latest/dynamic/instance-identity/"
    signature = (await api.get(base + "signature"))[1]
    for spelling in ("signature/", "/signature//", "./signature", "pkcs7/", "//pkcs7"):
        status, body, _ = await api.get(base + spelling)
        assert status == 200 and body, spelling
        if "signature" in spelling:  # RSA PKCS#1 v1.5 is deterministic; PKCS#7 carries a time
            assert body == signature, spelling


@pytest.fixture
async def vendor_target() -> AsyncIterator[str]:
    """A real HTTP target: /fast answers at once, /slow sleeps past the read timeout."""
    seen: list[dict[str, Any]] = []

    async def fast(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"from": "fast", "instance": seen[-1]["instance-id"]})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({"from": "slow"})

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=500)

    app = web.Application()
    app.router.add_post("/fast", fast)
    app.router.add_post("/slow", slow)
    app.router.add_post("/broken", broken)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        await server.close()


@pytest.fixture
def vendordata(api_config: dict[str, Any], vendor_target: str, tmp_path: Path) -> None:
    static = tmp_path / "cmt-vendor.json"
    static.write_text('{"cloud": "cmt"}')
    api_config.update(
        vendordata_providers=["StaticJSON", "DynamicJSON"],
        vendordata_jsonfile_path=str(static),
        vendordata_dynamic_targets=[
            f"fast@{vendor_target}/fast",
            f"slow@{vendor_target}/slow",
            f"broken@{vendor_target}/broken",
            "nameless",
        ],
        vendordata_dynamic_read_timeout=0.5,
    )


@pytest.mark.usefixtures("vendordata")
async def test_vendordata_static_and_dynamic_with_slow_target(api: Api) -> None:
    assert (await api.get("/openstack/latest/vendor_data.json"))[1] == b'{"cloud": "cmt"}'
    started = time.monotonic()
    status, body, headers = await api.get("/openstack/latest/vendor_data2.json")
    elapsed = time.monotonic() - started
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "static": {"cloud": "cmt"},
        "fast": {"from": "fast", "instance": api.cloud.servers["a0"]},
    }
    assert elapsed < 4.5  # the slow target's 5 s were cut by the 0.5 s read timeout


async def test_identity_verify_cli(api: Api, state_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cloudmeta.cli.identity import COMMANDS
    from cloudmeta.cli.main import cli

    for command in COMMANDS:
        cli.add_command(command)
    base = "/latest/dynamic/instance-identity/"
    (tmp_path / "document").write_bytes((await api.get(base + "document"))[1])
    (tmp_path / "signature").write_bytes((await api.get(base + "signature"))[1])
    runner = CliRunner()
    env = {"CLOUDMETA_STATE_PATH": str(state_dir)}
    args = ["identity", "verify", str(tmp_path / "document")]
    good = runner.invoke(cli, args, env=env)
    assert good.exit_code == 0, good.output
    assert "signature OK" in good.output
    (tmp_path / "document").write_bytes(b"{}")
    bad = runner.invoke(cli, args, env=env)
    assert bad.exit_code == 1
    assert "does NOT match" in bad.output


async def test_admin_api_change_seen_by_the_next_request(make_config: Any, state_dir: Path) -> None:
    """Both apps of ``cloudmeta api`` in one process: an admin DELETE is seen at once."""
    import socket

    import aiohttp
    from metadata_cloud import build_cloud, signed

    from cloudmeta.api.server import serve
    from cloudmeta.inventory import Store

    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    config = make_config(
        admin_token="cmt-admin-token",
        admin={"listen": "127.0.0.1", "port": ports[0]},
        api={"metadata_listen": "127.0.0.1", "metadata_listen_port": ports[1]},
    )
    store = await Store.open(config)
    try:
        cloud = await build_cloud(store, servers=1)
    finally:
        await store.close()
    async with serve(config) as bound, aiohttp.ClientSession() as session:
        meta = "http://127.0.0.1:{}/openstack/latest/password".format(bound["metadata"][1])
        admin = "http://127.0.0.1:{}/v1/servers/{}".format(bound["admin"][1], cloud.servers["a0"])
        auth = {"Authorization": "Bearer cmt-admin-token"}
        headers = signed(cloud.servers["a0"], cloud.project)
        async with session.post(meta, data=b"first", headers=headers) as r:
            assert r.status == 200
        async with session.get(meta, headers=headers) as r:
            assert await r.read() == b"first"  # now cached
        async with session.delete(admin + "/password", headers=auth) as r:
            assert r.status in (200, 204)
        async with session.get(meta, headers=headers) as r:
            assert await r.read() == b""
        async with session.delete(admin, headers=auth) as r:
            assert r.status in (200, 204)
        async with session.get(meta, headers=headers) as r:
            assert r.status == 404
