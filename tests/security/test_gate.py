"""The head gate and the quiet error pages (cloudmeta.http) on a loopback listener:
head timeout -> 408, connection caps -> 503 at once, malformed heads -> short 400 + one log
line, and complete requests (also split into many packets or pipelined) still served."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from cloudmeta.http import Budget, Limits, serve, tcp_sockets

CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def _hello(request: web.BaseRequest) -> web.StreamResponse:
    return web.Response(text=f"hello {request.path}\n")


@pytest.fixture
async def gate(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, Budget]]:
    limits: Limits = getattr(request, "param", Limits(header_timeout=0.5, max_connections=4))
    listener = await serve(tcp_sockets("127.0.0.1", 0), _hello, limits)
    try:
        yield listener.addresses[0][1], listener.budget  # type: ignore[index]
    finally:
        await listener.close()


async def _exchange(port: int, *chunks: bytes, pause: float = 0.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(pause)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_complete_heads_are_served_split_or_pipelined(gate: tuple[int, Budget]) -> None:
    port, budget = gate
    head = b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    split = [head[i : i + 3] for i in range(0, len(head), 3)]
    assert b"hello /a" in await _exchange(port, *split, pause=0.001)
    piped = (
        b"GET /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    reply = await _exchange(port, piped)
    assert b"hello /b" in reply and b"hello /c" in reply
    await _released(budget)


async def test_slow_head_gets_408(gate: tuple[int, Budget]) -> None:
    port, budget = gate
    began = time.monotonic()
    reply = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    assert reply.startswith(b"HTTP/1.1 408 "), reply
    assert time.monotonic() - began >= 0.4
    assert budget.timed_out == 1


async def test_connections_beyond_the_cap_get_503_and_others_still_work(
    gate: tuple[int, Budget],
) -> None:
    port, budget = gate
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
    try:
        for _, writer in held:
            writer.write(b"GET / HTTP/1.1\r\n")
        reply = await _exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 2" in reply, reply
        assert budget.refused == 1
    finally:
        for _, writer in held:
            writer.close()
    await _released(budget)
    assert b"hello" in await _exchange(
        port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )


@pytest.mark.parametrize(
    "gate", [Limits(header_timeout=2.0, max_connections=0, max_per_peer=2)], indirect=True
)
async def test_per_peer_cap(gate: tuple[int, Budget]) -> None:
    port, budget = gate
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    try:
        reply = await _exchange(port, b"GET / HTTP/1.1\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 503 "), reply
    finally:
        for _, writer in held:
            writer.close()
    await _released(budget)


async def test_malformed_head_short_400_one_log_line(
    gate: tuple[int, Budget], caplog: pytest.LogCaptureFixture
) -> None:
    port, _ = gate
    secret = b"cmt-echo-\x01-me"
    with caplog.at_level(logging.DEBUG):
        reply = await _exchange(port, b"GET / HTTP/1.1\r\nX-Bad: " + secret + b"\r\n\r\n")
        reply2 = await _exchange(port, b"GET / HTTP/1.1\r\nBad Header Name: 1\r\n\r\n")
    for answer in (reply, reply2):
        assert answer.split(b" ", 1)[1].startswith(b"400 "), answer
        assert answer.endswith(b"\r\n\r\n400 Bad Request\n"), answer
    assert b"cmt-echo" not in reply
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


async def _released(budget: Budget) -> None:
    """Until every connection closed by the client is given back (per peer too)."""
    async with asyncio.timeout(5.0):  # a liveness bound; it takes a loop pass or two
        while budget.open or budget.per_peer:  # noqa: ASYNC110 (no event to wait on)
            await asyncio.sleep(0.005)
