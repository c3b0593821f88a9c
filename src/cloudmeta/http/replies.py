"""The answers cloudmeta's servers write themselves: short plain text, never an echo.

One place for the 503 + ``Retry-After`` every listener gives when something behind it is away
(the agent, the port directory, the metadata API, a namespace's listener) or when a listener
is full, so the advice to the client reads the same everywhere; and for the cached answers'
pre-serialised form (:class:`WireHead`), which skips aiohttp's per-request response building.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import formatdate

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "RETRY_AFTER",
    "WireHead",
    "WireResponse",
    "busy_bytes",
    "http_date",
    "plain",
    "raw_reply",
    "unavailable",
]

RETRY_AFTER = "2"  # seconds a client is told to wait after a 503


def plain(status: int, message: str, **headers: str) -> web.Response:
    """A short text answer (``message`` plus a newline; Neutron's are text/plain)."""
    return web.Response(status=status, text=message + "\n", headers=headers)


def unavailable(message: str) -> web.Response:
    """503 with ``Retry-After``: what is behind this server is away; ``message`` says what."""
    return plain(503, message, **{"Retry-After": RETRY_AFTER})


def raw_reply(status: str, text: str, *extra: str) -> bytes:
    """A whole close-delimited plain-text answer as bytes, for the head gate (no aiohttp yet)."""
    body = text.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", *extra]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode() + body


def busy_bytes() -> bytes:
    """The gate's 503 to a connection beyond a listener's caps."""
    return raw_reply(
        "503 Service Unavailable",
        "Too many connections. Please retry.\n",
        f"Retry-After: {RETRY_AFTER}",
    )


_date: tuple[int, bytes] = (0, b"")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # what aiohttp refuses in a value


def http_date() -> bytes:
    """``Date``'s value (RFC 9110 IMF-fixdate), formatted once per second."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date[1]


class WireHead:
    """A 200's status line and fixed headers, serialised once per cached document.

    aiohttp builds a response object, a header map and its serialisation for every answer:
    a fifth of a cached answer's cost in the metadata API's profile (``bench/results``).
    A cached document's headers never change, so they are written as bytes once and each
    answer only adds ``Content-Length`` and ``Date`` (the same headers, in the same words,
    as aiohttp's own answer). ``headers`` serves the rare request the fast form does not
    (HTTP/1.0, ``Connection: close``): there aiohttp answers as ever.
    """

    __slots__ = ("_prefix", "_view", "headers")

    def __init__(self, headers: Mapping[str, str]) -> None:
        lines = [b"HTTP/1.1 200 OK\r\n"]
        for name, value in {**headers, "Server": SERVER_SOFTWARE}.items():
            if not _TOKEN.fullmatch(name) or _CONTROL.search(value):
                raise ValueError(f"header {name!r}: not a token, or a control character")
            lines.append(f"{name}: {value}\r\n".encode())
        self._prefix = b"".join(lines)
        self.headers = CIMultiDict(headers)
        self._view = CIMultiDictProxy(self.headers)  # what an answer shows: fixed, serialised

    def reply(self, request: web.BaseRequest, body: bytes) -> web.StreamResponse:
        """The answer to ``request`` with ``body``: pre-serialised on a kept-alive HTTP/1.1
        connection (nearly every one: cloud-init's and the agent's), else aiohttp's."""
        if request.version != HttpVersion11 or not request.keep_alive:
            return web.Response(body=body, headers=self.headers)
        head = b"%sContent-Length: %d\r\nDate: %s\r\n\r\n" % (
            self._prefix,
            len(body),
            http_date(),
        )
        return WireResponse(head, body, self._view, send_body=request.method != "HEAD")


class WireResponse(web.StreamResponse):
    """A whole HTTP/1.1 answer (status 200, kept alive) written as the bytes it was given
    (``head``: status line and headers, serialised), through the request's writer (so
    aiohttp's back-pressure still applies); ``body`` as a :class:`~aiohttp.web.Response`'s,
    ``headers`` the serialised ones (read-only: they are already bytes)."""

    __slots__ = ("_head", "_send_body", "_sent", "_view", "body")

    def __init__(
        self,
        head: bytes,
        body: bytes,
        headers: CIMultiDictProxy[str],
        *,
        send_body: bool = True,
    ) -> None:
        super().__init__()
        self._head = head
        self._view = headers
        self.body = body
        self._send_body = send_body
        self._sent = False

    @property
    def headers(self) -> CIMultiDictProxy[str]:  # type: ignore[override]
        return self._view

    @property
    def keep_alive(self) -> bool:
        return True

    @property
    def prepared(self) -> bool:
        return self._sent

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._sent:
            return None
        self._sent = True
        # write_eof with the bytes: written, then drained while the transport is paused (a
        # client pipelining requests without reading its answers waits, as for aiohttp's).
        await request.writer.write_eof(self._head + self.body if self._send_body else self._head)
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        if data:
            raise RuntimeError("a pre-serialised answer is complete: nothing can follow it")
