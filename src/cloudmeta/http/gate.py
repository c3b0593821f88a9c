"""Slow and abusive clients, for every listening socket of cloudmeta.

aiohttp alone has no request-head timeout and no connection cap, builds a parser, a task and a
keep-alive timer for every accepted connection, and parses each byte a trickling client sends.
:class:`HeadGate` sits in front of it (haproxy's ``timeout http-request``, ``timeout
http-keep-alive`` and ``maxconn``):

* until the first request head is complete a connection costs one small protocol object, one
  timer and a substring search per packet (no parser, no task); only a complete head (or one
  past :data:`MAX_HEAD`, which aiohttp then refuses) is handed to aiohttp;
* every head, the first and each one after it on a keep-alive connection, must be complete
  within ``header_timeout`` of its first byte, else 408 and the connection is closed; a next
  head that began while a request without a body was still being answered (in that
  request's packet or after it) is timed from its first byte too, but cut only once that
  answer is out, so a long-poll is never cut (after a body, whose bytes the gate does not
  tell from a next head's, the keep-alive timeout bounds the wait for the answer's end);
* between requests a connection may idle ``keepalive_timeout`` seconds (aiohttp's own timer,
  see :class:`~cloudmeta.http.quiet.QuietServer`); heads already pipelined are served;
* a :class:`Budget` (one per listener, i.e. per network or router namespace) caps open
  connections in total and per peer address: beyond it the connection is answered 503 and
  closed at once, so a flood on one network leaves the other networks' listeners alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from cloudmeta.config import Config
from cloudmeta.logs import get_logger

from .quiet import KEEPALIVE_TIMEOUT, QuietHandler, QuietServer
from .replies import busy_bytes, raw_reply

__all__ = ["HEADER_TIMEOUT", "MAX_HEAD", "Budget", "HeadGate", "Limits", "gated"]

HEADER_TIMEOUT = 10.0  # seconds for a whole request head (haproxy: timeout http-request)
MAX_HEAD = 65536  # past this, aiohttp's own limits refuse the head (400/431)

_TIMEOUT_REPLY = raw_reply("408 Request Timeout", "The request head did not arrive in time.\n")
_BUSY_REPLY = busy_bytes()

log = get_logger("http")


@dataclass(frozen=True, slots=True)
class Limits:
    """What one listener tolerates; 0 connections means no cap."""

    header_timeout: float = HEADER_TIMEOUT
    max_connections: int = 0
    max_per_peer: int = 0
    keepalive_timeout: float = KEEPALIVE_TIMEOUT

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """An instance-facing listener (inline, process proxy): the timeouts and the caps."""
        return cls(
            header_timeout=config.metadata_proxy_header_timeout,
            max_connections=config.metadata_proxy_max_connections,
            max_per_peer=config.metadata_proxy_max_connections_per_peer,
            keepalive_timeout=config.metadata_proxy_keepalive_timeout,
        )

    @classmethod
    def timeouts(cls, config: Config) -> Limits:
        """A listener of cloudmeta's own clients (agent socket, metadata and admin API): the
        same timeouts, no connection caps (a few peers hold many pooled connections)."""
        return cls(
            header_timeout=config.metadata_proxy_header_timeout,
            keepalive_timeout=config.metadata_proxy_keepalive_timeout,
        )


@dataclass(slots=True)
class Budget:
    """The open connections of one listener (all of its sockets), in total and per peer."""

    limits: Limits
    open: int = 0
    refused: int = 0  # both caps
    refused_per_peer: int = 0  # of which the per-peer cap
    timed_out: int = 0
    per_peer: dict[str, int] = field(default_factory=dict)

    def take(self, peer: str) -> bool:
        cap, per = self.limits.max_connections, self.limits.max_per_peer
        if (cap and self.open >= cap) or (per and self.per_peer.get(peer, 0) >= per):
            self.refused += 1
            if not (cap and self.open >= cap):
                self.refused_per_peer += 1
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
    """One connection: buffer the first head cheaply, then relay everything to aiohttp's
    handler, timing each later head from its first byte."""

    __slots__ = (
        "_budget",
        "_buffer",
        "_factory",
        "_inner",
        "_next_begun",
        "_peer",
        "_timer",
        "_transport",
    )

    def __init__(self, factory: Callable[[], QuietHandler], budget: Budget) -> None:
        self._factory = factory
        self._budget = budget
        self._inner: QuietHandler | None = None
        self._buffer = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self._peer: str | None = None  # None: not counted in the budget
        # The newest complete head has no body: a byte after it is the next head's.
        self._next_begun = False

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
        self._start_timer()

    def data_received(self, data: bytes) -> None:
        inner = self._inner
        if inner is not None:
            waiting, heads = inner.waiting, inner.heads
            inner.data_received(data)
            if inner.heads != heads:
                self._stop_timer()  # a head is complete; a next one may begin after it
                self._heads_done(inner, data)
            elif (
                (waiting or self._next_begun)
                and self._timer is None
                and self._transport is not None
            ):
                # The first bytes of a next head (maybe while its predecessor is answered).
                inner.hold_keepalive()
                self._start_timer()
            return
        if self._transport is None:
            return
        start = max(0, len(self._buffer) - 3)
        self._buffer += data
        buf = self._buffer
        if buf.find(b"\n\r\n", start) >= 0 or buf.find(b"\n\n", start) >= 0 or len(buf) > MAX_HEAD:
            self._hand_over()

    def _start_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._budget.limits.header_timeout, self._too_slow)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _hand_over(self) -> None:
        assert self._transport is not None
        self._stop_timer()
        inner = self._inner = self._factory()
        inner.connection_made(self._transport)
        head, self._buffer = bytes(self._buffer), bytearray()
        inner.data_received(head)
        if inner.heads:
            self._heads_done(inner, head)

    def _heads_done(self, inner: QuietHandler, data: bytes) -> None:
        """``data`` completed a head: time the next one if it has begun behind it already."""
        inner.release_keepalive()
        self._next_begun = inner.bodiless
        if self._next_begun and self._transport is not None and _after_last_head(data):
            inner.hold_keepalive()
            self._start_timer()

    def _too_slow(self) -> None:
        self._timer = None
        inner = self._inner
        if inner is not None and not inner.waiting and self._transport is not None:
            self._start_timer()  # an answer is still being made: the 408 waits behind it
            return
        if self._transport is not None:
            self._budget.timed_out += 1
            log.debug("request head timed out", peer=self._peer)
            self._transport.write(_TIMEOUT_REPLY)
            self._transport.close()

    def eof_received(self) -> bool | None:
        if self._inner is not None:
            self._inner.eof_received()
        return None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        if self._peer is not None:
            self._budget.give(self._peer)
            self._peer = None
        self._transport = None
        if self._inner is not None:
            self._inner.connection_lost(exc)


def _after_last_head(data: bytes) -> bool:
    """Whether bytes follow the last head end in ``data`` (a next head's first bytes)."""
    crlf, lf = data.rfind(b"\r\n\r\n"), data.rfind(b"\n\n")
    end = max(crlf + 4 if crlf >= 0 else 0, lf + 2 if lf >= 0 else 0)
    return 0 < end < len(data)


def gated(server: QuietServer, budget: Budget) -> Callable[[], HeadGate]:
    """The protocol factory for ``loop.create_server``: ``server`` behind a head gate."""

    def factory() -> HeadGate:
        return HeadGate(server, budget)

    return factory
