"""The answers cloudmeta's servers write themselves: short plain text, never an echo.

One place for the 503 + ``Retry-After`` every listener gives when something behind it is away
(the agent, the port directory, the metadata API, a namespace's listener) or when a listener
is full, so the advice to the client reads the same everywhere.
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["RETRY_AFTER", "busy_bytes", "plain", "raw_reply", "unavailable"]

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
