"""Keep-alive on a real inline listener inside a namespace (the agent's own sockets): after one
GET, an idle connection is closed, a trickled second head gets 408 (also one begun in the GET's
own packet), a whole second request is served, and each time the namespace's connection slot
is given back."""

from __future__ import annotations

import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from cloudmeta import linux
from cloudmeta.http import Limits
from cloudmeta.proxy.binds import Bind
from cloudmeta.proxy.headers import Peer, ProxyTarget
from cloudmeta.proxy.inline import InlineListeners

pytestmark = pytest.mark.root

CLIENT = Path(__file__).resolve().parents[1] / "support" / "keepalive_client.py"
LIMITS = Limits(header_timeout=0.3, keepalive_timeout=0.3, max_connections=8, max_per_peer=4)


async def _hello(request: web.BaseRequest, target: ProxyTarget, peer: Peer) -> web.StreamResponse:
    return web.Response(text=f"hello {request.path}\n")


@pytest.fixture
async def listening() -> AsyncIterator[tuple[InlineListeners, str]]:
    namespace = f"cmt-{secrets.token_hex(3)}-ka"
    linux.create_namespace(namespace)
    listeners = InlineListeners(_hello, LIMITS)
    try:
        await linux.set_link(namespace, "lo", up=True)
        await listeners.ensure(namespace, ProxyTarget(network_id="net-ka"), [Bind("127.0.0.1", 80)])
        yield listeners, namespace
    finally:
        await listeners.close()
        linux.delete_namespace(namespace)


@pytest.mark.parametrize(
    ("mode", "line", "second"),
    [
        ("idle", "EOF", False),
        ("trickle", "HTTP/1.1 408 Request Timeout", False),
        ("behind", "HTTP/1.1 408 Request Timeout", False),
        ("again", "HTTP/1.1 200 OK", True),
    ],
)
async def test_inline_keepalive(
    listening: tuple[InlineListeners, str], mode: str, line: str, second: bool
) -> None:
    listeners, namespace = listening
    argv = [sys.executable, str(CLIENT), "127.0.0.1", "80", mode]
    out = (await linux.run(argv, namespace=namespace, timeout=30)).stdout.strip()
    got, seconds, served = out.split("|")
    assert (got, served) == (line, str(second)), out
    if mode != "again":
        assert float(seconds) >= 0.25, out
    budget = listeners.budget_of(namespace)
    assert budget is not None
    assert budget.open == 0 and budget.per_peer == {}
    assert budget.timed_out == (1 if mode in ("trickle", "behind") else 0)


async def test_connection_facts_are_read_once_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two requests on one keep-alive connection: one cookie read, the same target and peer
    for both; a new connection reads its own."""
    from cloudmeta.proxy import inline

    reads: list[bytes] = []
    real = inline.netns_cookie

    def counting(sock: object) -> bytes:
        cookie = real(sock)  # type: ignore[arg-type]
        reads.append(cookie)
        return cookie

    monkeypatch.setattr(inline, "netns_cookie", counting)
    seen: list[tuple[str, str, str]] = []

    async def record(
        request: web.BaseRequest, target: ProxyTarget, peer: Peer
    ) -> web.StreamResponse:
        seen.append((request.path, target.uuid, peer.ip))
        return web.Response(text=f"hello {request.path}\n")

    namespace = f"cmt-{secrets.token_hex(3)}-cf"
    linux.create_namespace(namespace)
    listeners = InlineListeners(record, LIMITS)
    try:
        await linux.set_link(namespace, "lo", up=True)
        await listeners.ensure(namespace, ProxyTarget(network_id="net-cf"), [Bind("127.0.0.1", 80)])
        reads.clear()  # ensure() read the listener's own cookie
        argv = [sys.executable, str(CLIENT), "127.0.0.1", "80", "again"]
        out = (await linux.run(argv, namespace=namespace, timeout=30)).stdout.strip()
        assert out.endswith("|True"), out
        assert seen == [("/first", "net-cf", "127.0.0.1"), ("/second", "net-cf", "127.0.0.1")]
        assert len(reads) == 1
        await linux.run(argv, namespace=namespace, timeout=30)
        assert len(reads) == 2 and len(seen) == 4
    finally:
        await listeners.close()
        linux.delete_namespace(namespace)
