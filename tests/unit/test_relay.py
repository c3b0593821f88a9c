"""The one relay (process proxy -> agent, agent -> metadata API): the upstream's status and
end-to-end headers pass, its hop-by-hop fields, Date and Server do not; an unreachable
upstream raises UpstreamError; a forwarded token PUT is refused with 403."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from cloudmeta.http import Limits, Relay, UpstreamError, refuse_forwarded_token_put, serve
from cloudmeta.http.serve import tcp_sockets


async def _upstream(request: web.BaseRequest) -> web.StreamResponse:
    body = await request.read()
    return web.Response(
        status=418,
        body=body + request.headers.get("X-In", "").encode(),
        headers={"X-Keep": "1", "Server": "upstream", "Keep-Alive": "timeout=9"},
    )


async def test_relay_keeps_status_and_end_to_end_headers_only() -> None:
    listener = await serve(tcp_sockets("127.0.0.1", 0), _upstream, Limits())
    port = listener.addresses[0][1]  # type: ignore[index]
    relay = Relay(f"http://127.0.0.1:{port}", aiohttp.TCPConnector, timeout=5, pool=4, keepalive=1)
    await relay.start()
    try:
        resp = await relay.send("POST", "/x?y=1", CIMultiDict({"X-In": "!"}), b"body")
        assert resp.status == 418 and resp.body == b"body!"
        assert resp.headers["X-Keep"] == "1"
        for dropped in ("Server", "Date", "Keep-Alive", "Connection", "Content-Length"):
            assert dropped not in resp.headers
    finally:
        await relay.close()
        await listener.close()


async def test_unreachable_upstream_is_upstream_error() -> None:
    sock = tcp_sockets("127.0.0.1", 0)[0]
    port = sock.getsockname()[1]
    sock.close()  # nobody listens there now
    relay = Relay(f"http://127.0.0.1:{port}", aiohttp.TCPConnector, timeout=5, pool=1, keepalive=1)
    await relay.start()
    try:
        with pytest.raises(UpstreamError):
            await relay.send("GET", "/", CIMultiDict(), None)
    finally:
        await relay.close()


@pytest.mark.parametrize(
    ("method", "path", "headers", "refused"),
    [
        ("PUT", "/latest/api/token", {"X-Forwarded-For": "192.0.2.1"}, True),
        ("PUT", "/ec2/latest/api/./token", {"X-Forwarded-For": "192.0.2.1"}, True),
        ("PUT", "/latest/api/token", {}, False),
        ("GET", "/latest/api/token", {"X-Forwarded-For": "192.0.2.1"}, False),
    ],
)
def test_forwarded_token_put_is_403(
    method: str, path: str, headers: dict[str, str], refused: bool
) -> None:
    answer = refuse_forwarded_token_put(make_mocked_request(method, path, headers=headers))
    if not refused:
        assert answer is None
        return
    assert answer is not None and answer.status == 403
    assert answer.text == "A token request must not carry X-Forwarded-For.\n"


def test_a_long_poll_extends_the_relay_timeout_by_its_capped_wait() -> None:
    from cloudmeta.http.longpoll import MAX_TIMEOUT_SEC, Wait, relay_extension, requested_wait

    assert relay_extension("/openstack/latest/meta_data.json") == 0
    assert relay_extension("/latest/meta-data/?wait_for_change=false&timeout_sec=9") == 0
    assert relay_extension("/x?wait_for_change=true&timeout_sec=7") == 7
    assert relay_extension("/x?wait_for_change=TRUE") == MAX_TIMEOUT_SEC  # GCE: no timeout
    assert relay_extension("/x?wait_for_change=true&timeout_sec=9999") == MAX_TIMEOUT_SEC
    assert relay_extension("/x?wait_for_change=true&timeout_sec=soon") == 0  # the API: 400
    assert requested_wait({"wait_for_change": "true", "last_etag": "abc"}) == Wait(
        MAX_TIMEOUT_SEC, "abc"
    )
    assert requested_wait({"last_etag": "abc"}) is None
