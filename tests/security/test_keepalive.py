"""Keep-alive through the head gate: after one valid GET, the connection's next head is timed
too (408), also one that began in the same packet as the GET or while the GET was answered
(timed from then, cut only once that answer is out), an idle connection is closed after the
keep-alive timeout, a well-behaved next request (whole, split or pipelined) is served, and the
listener's slot is given back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from cloudmeta.config import Config
from cloudmeta.http import Budget, Limits, serve, tcp_sockets
from cloudmeta.inventory import Store
from support.serving import shipped

KEEP = b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n"
BOUND = 10.0  # generous: a loaded machine must not fail these, a hang must


SLOW = 0.6  # seconds /slow takes to answer: twice TRICKLE's head timeout
_slow_begun: list[asyncio.Event] = []  # set as /slow begins, for a test that waits for it


async def _hello(request: web.BaseRequest) -> web.StreamResponse:
    if request.path == "/slow":  # still answering when the gate's head timer fires
        for begun in _slow_begun:
            begun.set()
        await asyncio.sleep(SLOW)
    return web.Response(text=f"hello {request.path}\n")


@pytest.fixture
async def listener(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, Budget]]:
    limits: Limits = request.param
    listener = await serve(tcp_sockets("127.0.0.1", 0), _hello, limits)
    try:
        yield listener.addresses[0][1], listener.budget  # type: ignore[index]
    finally:
        await listener.close()


async def _response(reader: asyncio.StreamReader) -> bytes:
    """One whole response (head + Content-Length body) off a keep-alive connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), BOUND)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), BOUND)


async def _first_get(
    port: int, head: bytes = KEEP, expect: bytes = b"hello /first"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    reply = await _response(reader)
    assert reply.startswith(b"HTTP/1.1 200 ") and expect in reply, reply
    return reader, writer


def _freed(budget: Budget) -> None:
    """The listener holds no connection: the server gives the slot back before it closes the
    socket, so once the client has read EOF this holds without waiting."""
    assert budget.open == 0 and budget.per_peer == {}


IDLE = Limits(header_timeout=30.0, max_connections=8, max_per_peer=4, keepalive_timeout=0.3)
TRICKLE = Limits(header_timeout=0.3, max_connections=8, max_per_peer=4, keepalive_timeout=30.0)


@pytest.mark.parametrize("listener", [IDLE], indirect=True)
async def test_idle_keepalive_connection_is_closed(listener: tuple[int, Budget]) -> None:
    port, budget = listener
    reader, writer = await _first_get(port)
    began = time.monotonic()
    try:
        rest = await asyncio.wait_for(reader.read(), BOUND)  # EOF: the server closed it
    finally:
        writer.close()
    assert rest == b""
    assert time.monotonic() - began >= 0.25
    _freed(budget)


@pytest.mark.parametrize("listener", [TRICKLE], indirect=True)
async def test_trickled_second_head_gets_408(listener: tuple[int, Budget]) -> None:
    port, budget = listener
    reader, writer = await _first_get(port)
    began = time.monotonic()
    try:
        writer.write(b"GET /second HTTP/1.1\r\nHost: x\r\n")
        writer.write(b"X-Slow: ")
        rest = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
    assert rest.startswith(b"HTTP/1.1 408 "), rest
    assert time.monotonic() - began >= 0.25
    assert budget.timed_out == 1
    _freed(budget)


@pytest.mark.parametrize("listener", [TRICKLE], indirect=True)
@pytest.mark.parametrize("first", ["/first", "/slow"])
async def test_a_next_head_begun_behind_a_request_is_timed_too(
    listener: tuple[int, Budget], first: str
) -> None:
    """The start of a next head in the GET's own packet: it gets the same head timeout (not
    the 30 s keep-alive), and a GET still being answered when it expires is answered first."""
    port, budget = listener
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    began = time.monotonic()
    try:
        writer.write(f"GET {first} HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHo".encode())
        reply = await _response(reader)
        rest = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
    assert reply.startswith(b"HTTP/1.1 200 ") and f"hello {first}".encode() in reply, reply
    assert rest.startswith(b"HTTP/1.1 408 "), rest
    assert time.monotonic() - began >= 0.25
    assert budget.timed_out == 1
    _freed(budget)


@pytest.mark.parametrize("listener", [TRICKLE], indirect=True)
async def test_a_next_head_sent_while_the_request_is_answered_is_timed_too(
    listener: tuple[int, Budget],
) -> None:
    port, budget = listener
    begun = asyncio.Event()
    _slow_begun.append(begun)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(begun.wait(), BOUND)  # being answered: the next head follows
        writer.write(b"GET /second HTTP/1.1\r\nHo")
        reply = await _response(reader)
        rest = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
        _slow_begun.remove(begun)
    assert b"hello /slow" in reply, reply
    assert rest.startswith(b"HTTP/1.1 408 "), rest
    assert budget.timed_out == 1
    _freed(budget)


@pytest.mark.parametrize("listener", [TRICKLE], indirect=True)
async def test_well_behaved_second_request_is_served(listener: tuple[int, Budget]) -> None:
    port, budget = listener
    reader, writer = await _first_get(port)
    try:
        second = b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n"
        for i in range(0, len(second), 7):  # split, yet complete well within the timeout
            writer.write(second[i : i + 7])
            await writer.drain()
        assert b"hello /second" in await _response(reader)
        piped = (
            b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /fourth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        writer.write(piped)
        rest = await asyncio.wait_for(reader.read(), BOUND)
    finally:
        writer.close()
    assert b"hello /third" in rest and b"hello /fourth" in rest, rest
    assert budget.timed_out == 0
    _freed(budget)


@pytest.mark.parametrize("name", ["metadata", "admin"])
async def test_the_api_ports_have_the_same_timeouts(
    name: str, make_config: Callable[..., Config]
) -> None:
    """``cloudmeta api``'s own ports (as it serves them) close an idle keep-alive connection
    and answer a trickled second head 408, with the same options as the proxies' listeners."""
    config = make_config(metadata_proxy_keepalive_timeout=0.3, metadata_proxy_header_timeout=0.3)
    head, expect = {
        "metadata": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"latest"),
        "admin": (b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n", b"openapi"),
    }[name]
    store = await Store.open(config)
    try:
        async with shipped(config, store, name) as port:
            reader, writer = await _first_get(port, head, expect)
            try:
                assert await asyncio.wait_for(reader.read(), BOUND) == b""
            finally:
                writer.close()
            reader, writer = await _first_get(port, head, expect)
            try:
                writer.write(head[:-2])  # all but the blank line ending the head
                rest = await asyncio.wait_for(reader.read(), BOUND)
            finally:
                writer.close()
            assert rest.startswith(b"HTTP/1.1 408 "), rest
    finally:
        await store.close()
