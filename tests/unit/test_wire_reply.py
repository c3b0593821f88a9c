"""The cached documents' pre-serialised answer (:class:`~cloudmeta.http.WireHead`), through
the one serving stack on a loopback socket: the same status, headers and body as aiohttp's
own answer; HEAD without a body; HTTP/1.0 and ``Connection: close`` answered by aiohttp (and
closed); pipelined requests answered in order on one kept-alive connection."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from cloudmeta.http import Limits, WireHead, WireResponse, serve, tcp_sockets

BODY = b'{"uuid": "cmt-wire"}'
HEAD = WireHead({"Content-Type": "application/json", "ETag": 'W/"cmt-tag"'})


BIG = b"x" * 16384
ANSWERED: list[int] = []  # one item per /big answered (the back-pressure test)


async def _handler(request: web.BaseRequest) -> web.StreamResponse:
    if request.path == "/aiohttp":  # the reference: aiohttp's own answer, same headers
        return web.Response(body=BODY, headers=HEAD.headers)
    if request.path == "/big":
        ANSWERED.append(1)
        return HEAD.reply(request, BIG)
    return HEAD.reply(request, BODY)


@pytest.fixture
async def port() -> AsyncIterator[int]:
    listener = await serve(tcp_sockets("127.0.0.1", 0), _handler, Limits())
    try:
        yield listener.servers[0].sockets[0].getsockname()[1]
    finally:
        await listener.close(1)


async def _exchange(
    port: int, raw: bytes, answers: int = 1, heads: tuple[int, ...] = ()
) -> tuple[list[bytes], bool]:
    """Send ``raw``; the ``answers`` messages read back (head and body; ``heads`` are the
    indexes of the answers to HEAD, which have none) and whether the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        messages = []
        for index in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            body = b"" if index in heads else await reader.readexactly(length)
            messages.append(head + body)
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return messages, closed
    finally:
        writer.close()


def _fields(message: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, headers by lower-cased name (Date dropped: it ticks), body."""
    head, _, body = message.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines)
    headers = {k.lower(): v for k, v in headers.items() if k.lower() != b"date"}
    return status, headers, body


async def test_the_wire_answer_is_aiohttps_answer(port: int) -> None:
    (ours,), ours_closed = await _exchange(port, b"GET /doc HTTP/1.1\r\nHost: x\r\n\r\n")
    (theirs,), _ = await _exchange(port, b"GET /aiohttp HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _fields(ours) == _fields(theirs)
    assert _fields(ours)[0] == b"HTTP/1.1 200 OK" and _fields(ours)[2] == BODY
    assert b"\r\nDate: " in ours and not ours_closed  # kept alive


async def test_head_has_the_headers_and_no_body(port: int) -> None:
    (answer,), closed = await _exchange(port, b"HEAD /doc HTTP/1.1\r\nHost: x\r\n\r\n", heads=(0,))
    status, headers, body = _fields(answer)
    assert (status, body, headers[b"content-length"]) == (
        b"HTTP/1.1 200 OK",
        b"",
        b"%d" % len(BODY),
    )
    assert not closed
    # Nothing follows the head: a next request on the connection gets its own answer.
    two, _ = await _exchange(
        port, b"HEAD /doc HTTP/1.1\r\nHost: x\r\n\r\nGET /doc HTTP/1.1\r\nHost: x\r\n\r\n", 2, (0,)
    )
    assert _fields(two[1])[2] == BODY


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /doc HTTP/1.0\r\n\r\n",
        b"GET /doc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ],
    ids=["http-1.0", "connection-close"],
)
async def test_a_closing_request_is_answered_by_aiohttp_and_closed(
    port: int, request_bytes: bytes
) -> None:
    (answer,), closed = await _exchange(port, request_bytes)
    status, headers, body = _fields(answer)
    assert body == BODY and headers[b"etag"] == b'W/"cmt-tag"' and closed
    assert status.endswith(b" 200 OK")


async def test_pipelined_requests_are_answered_in_order(port: int) -> None:
    requests = (
        b"".join(b"GET /doc?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in range(20))
        + b"GET /aiohttp HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answers, closed = await _exchange(port, requests, 21)
    assert [_fields(a)[2] for a in answers] == [BODY] * 21 and not closed


async def test_a_client_that_does_not_read_holds_the_answers_back(port: int) -> None:
    """2 000 pipelined requests for 16 KiB answers (32 MiB), none read: the server stops
    answering once the transport is full (aiohttp's drain), instead of buffering them all."""
    ANSWERED.clear()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n" * 2000)
        await asyncio.sleep(1.0)
        held = len(ANSWERED)
        assert 0 < held < 2000, held
        received = 0
        while received < 2000 * len(BIG):
            chunk = await asyncio.wait_for(reader.read(1 << 20), 10)
            assert chunk
            received += chunk.count(b"x")
        assert len(ANSWERED) == 2000
    finally:
        writer.close()


@pytest.mark.parametrize(
    "headers",
    [{"ETag": '"a"\r\nSet-Cookie: x'}, {"ETag": '"a"\x00'}, {"Bad Name": "x"}, {"X\n": "y"}],
    ids=["line-break", "nul", "space-in-name", "break-in-name"],
)
def test_a_header_that_could_split_the_answer_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="control character"):
        WireHead(headers)


async def test_the_answer_object_shows_what_it_sends() -> None:
    from aiohttp.test_utils import make_mocked_request

    answer = HEAD.reply(make_mocked_request("GET", "/doc"), BODY)
    assert isinstance(answer, WireResponse)
    assert (answer.status, answer.body, answer.headers["ETag"]) == (200, BODY, 'W/"cmt-tag"')
    with pytest.raises(TypeError):
        answer.headers["ETag"] = "changed"  # type: ignore[index]  # already bytes
