"""aiohttp's low-level server with quiet error pages and a bounded keep-alive.

:class:`QuietServer` answers malformed requests with a short plain 4xx (never echoing what the
client sent) and logs one info line instead of aiohttp's traceback. Its connections close
after ``keepalive_timeout`` idle seconds (aiohttp's default is an hour). The few aiohttp
internals the head gate needs to time every request head (is the connection waiting for its
next request? how many heads has it parsed? has the newest one a body?) are read here and
nowhere else. The keep-alive
timer runs only between requests: a request in progress (a change long-poll that waits
minutes) is never cut by it, nor by the head gate, which times heads only.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler

from cloudmeta.logs import throttled_logger

__all__ = ["KEEPALIVE_TIMEOUT", "QuietHandler", "QuietServer"]

KEEPALIVE_TIMEOUT = 30.0  # idle seconds between requests (haproxy: timeout http-keep-alive)

log = throttled_logger("http")  # malformed requests are the caller's to send


class QuietHandler(RequestHandler):
    """aiohttp's handler with a short, non-echoing answer to client errors; ``facts`` is
    where a listener keeps what it learnt of the connection once (the inline listeners: its
    namespace cookie and peer), rather than asking the socket on every request."""

    __slots__ = ("_head_begun", "facts")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.facts: Any = None
        self._head_begun = False

    @property
    def waiting(self) -> bool:
        """Between requests: the previous answer is written and no next head is queued."""
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    @property
    def heads(self) -> int:
        """How many request heads this connection has parsed so far."""
        return self._request_count

    @property
    def bodiless(self) -> bool:
        """The newest request parsed (still queued: read right after a head completed) has
        no body, so any byte after its head begins the next head."""
        messages = self._messages
        return bool(messages) and messages[-1][1] is EMPTY_PAYLOAD

    def hold_keepalive(self) -> None:
        """A next head has begun: its own timeout governs now, not the idle one (also when
        it began before the answer ahead of it, after which aiohttp arms the idle timer)."""
        self._head_begun = True
        if self._keepalive_handle is not None:
            self._keepalive_handle.cancel()
            self._keepalive_handle = None

    def release_keepalive(self) -> None:
        """The head is complete: after its answer the idle timeout governs again."""
        self._head_begun = False

    def _process_keepalive(self) -> None:
        if self._head_begun:  # the head gate times this connection now
            self._keepalive_handle = None
            return
        super()._process_keepalive()

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
    """:class:`aiohttp.web.Server` whose connections answer malformed requests quietly and
    close after ``keepalive_timeout`` idle seconds; no access log (one line per request)."""

    def __init__(
        self,
        handler: Any,
        *,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        on_shutdown: Callable[[], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("access_log", None)
        super().__init__(handler, keepalive_timeout=keepalive_timeout, **kwargs)
        self._on_shutdown = on_shutdown

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Tell the handler first (long-polls answer now, within the grace), then stop."""
        if self._on_shutdown is not None:
            self._on_shutdown()
        await super().shutdown(timeout)

    @classmethod
    def of_app(cls, server: web.Server, *, keepalive_timeout: float) -> QuietServer:
        """The same request path as ``server`` (an :class:`~aiohttp.web.AppRunner`'s)."""
        return cls(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            keepalive_timeout=keepalive_timeout,
            **{k: v for k, v in server._kwargs.items() if k != "keepalive_timeout"},
        )

    def __call__(self) -> QuietHandler:
        return QuietHandler(self, loop=self._loop, **self._kwargs)
