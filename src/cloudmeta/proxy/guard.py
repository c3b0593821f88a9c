"""Slow and abusive clients, for every aiohttp server an instance (or a proxy) can reach.

aiohttp alone has no request-head timeout and no connection cap, builds a parser, a task and a
keep-alive timer for every accepted connection, and parses each byte a trickling client sends.
:class:`HeadGate` sits in front of it (haproxy's ``timeout http-request`` + ``maxconn``):

* until the request head is complete a connection costs one small protocol object, one timer
  and a substring search per packet (no parser, no task); only a complete head (or one past
  :data:`MAX_HEAD`, which aiohttp then refuses) is handed to aiohttp;
* a head not complete within ``header_timeout`` gets a 408 and the connection is closed;
* a :class:`Budget` (one per listener, i.e. per network or router namespace) caps open
  connections in total and per peer address: beyond it the connection is answered 503 and
  closed at once, so a flood on one network leaves the other networks' listeners alone.

:class:`QuietServer` answers malformed requests with a short plain 4xx (never echoing what the
client sent) and logs one info line instead of aiohttp's traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from cloudmeta.config import Config
from cloudmeta.logs import get_logger

__all__ = ["HEADER_TIMEOUT", "Budget", "HeadGate", "Limits", "QuietServer", "gated"]

HEADER_TIMEOUT = 10.0  # seconds for the whole request head (haproxy: timeout http-request)
MAX_HEAD = 65536  # past this, aiohttp's own limits refuse the head (400/431)


def _reply(status: str, text: str, *extra: str) -> bytes:
    """A whole close-delimited plain-text answer, written by the gate itself."""
    body = text.encode()
    head = [f"HTTP/1.1 {status}", "Content-Type: text/plain; charset=utf-8", *extra]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode() + body


_TIMEOUT_REPLY = _reply("408 Request Timeout", "The request head did not arrive in time.\n")
_BUSY_REPLY = _reply(
    "503 Service Unavailable", "Too many connections. Please retry.\n", "Retry-After: 2"
)

log = get_logger("proxy")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one listener tolerates; 0 means no cap."""

    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = 0
    max_per_peer: int = 0

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        return cls(
            header_timeout=config.metadata_proxy_header_timeout,
            max_connections=config.metadata_proxy_max_connections,
            max_per_peer=config.metadata_proxy_max_connections_per_peer,
        )


@dataclass(slots=True)
class Budget:
    """The open connections of one listener (all of its sockets), in total and per peer."""

    limits: Limits
    open: int = 0
    refused: int = 0
    timed_out: int = 0
    per_peer: dict[str, int] = field(default_factory=dict)

    def take(self, peer: str) -> bool:
        cap, per = self.limits.max_connections, self.limits.max_per_peer
        if (cap and self.open >= cap) or (per and self.per_peer.get(peer, 0) >= per):
            self.refused += 1
            return False
        self.open += 1
        if per:
            self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        return True

    def give(self, peer: str) -> None:
        self.open -= 1
        if self.limits.max_per_peer:
            left = self.per_peer.pop(peer, 1) - 1
            if left > 0:
                self.per_peer[peer] = left


class HeadGate(asyncio.Protocol):
    """One connection: buffer the head cheaply, then relay everything to aiohttp's handler."""

    __slots__ = ("_budget", "_buffer", "_factory", "_inner", "_peer", "_timer", "_transport")

    def __init__(self, factory: Callable[[], asyncio.Protocol], budget: Budget) -> None:
        self._factory = factory
        self._budget = budget
        self._inner: asyncio.Protocol | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None  # None: not counted in the budget

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peername = transport.get_extra_info("peername")
        peer = str(peername[0]) if isinstance(peername, tuple) else ""
        if not self._budget.take(peer):
            transport.write(_BUSY_REPLY)
            transport.close()
            return
        self._peer = peer
        self._transport = transport
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._budget.limits.header_timeout, self._too_slow)

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        if self._transport is None:
            return
        start = max(0, len(self._buffer) - 3)
        self._buffer += data
        buf = self._buffer
        if buf.find(b"\n\r\n", start) >= 0 or buf.find(b"\n\n", start) >= 0 or len(buf) > MAX_HEAD:
            self._hand_over()

    def _hand_over(self) -> None:
        assert self._transport is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        inner = self._inner = self._factory()
        inner.connection_made(self._transport)
        head, self._buffer = bytes(self._buffer), bytearray()
        inner.data_received(head)

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and self._inner is None:
            self._budget.timed_out += 1
            log.debug("request head timed out", peer=self._peer)
            self._transport.write(_TIMEOUT_REPLY)
            self._transport.close()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._peer is not None:
            self._budget.give(self._peer)
            self._peer = None
        self._transport = None
        if self._inner is not None:
            self._inner.connection_lost(exc)


class _QuietHandler(RequestHandler):
    """aiohttp's handler with a short, non-echoing answer to client errors."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.info(
            "malformed request refused",
            peer=request.remote,
            status=status,
            error=type(exc).__name__ if exc is not None else "",
        )
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Bad Request"
        response = web.Response(status=status, text=f"{status} {phrase}\n")
        response.force_close()
        return response


class QuietServer(web.Server):
    """:class:`aiohttp.web.Server` whose connections answer malformed requests quietly."""

    def __call__(self) -> RequestHandler:
        return _QuietHandler(self, loop=self._loop, **self._kwargs)


def gated(server: web.Server, budget: Budget) -> Callable[[], HeadGate]:
    """The protocol factory for ``loop.create_server``: ``server`` behind a head gate."""

    def factory() -> HeadGate:
        return HeadGate(server, budget)

    return factory
