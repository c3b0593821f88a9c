"""Relaying a request to an upstream HTTP server: the process proxy (to the agent's unix
socket) and the agent (to the metadata API) are two uses of one :class:`Relay`.

A relay reads the whole answer, keeps its end-to-end headers only (hop-by-hop fields, ``Date``
and ``Server`` are the relay's own to set) and leaves the status to the caller. The token-PUT
rule (AWS's SSRF guard) is here too: a proxy or an inline listener refuses a token PUT that
already went through a forwarding proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.documents.paths import path_tokens

from .longpoll import relay_extension
from .replies import plain

__all__ = [
    "DROPPED_FROM_UPSTREAM",
    "HOP_BY_HOP",
    "Relay",
    "UpstreamError",
    "is_forbidden_token_put",
    "refuse_forwarded_token_put",
]

# Connection-scoped headers (RFC 9110 7.6.1) that never cross a proxy.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)
DROPPED_FROM_UPSTREAM = HOP_BY_HOP | {"date", "server"}
# The token path as the metadata API routes it (``/latest/api/token``, ``/ec2/latest/...``).
TOKEN_TOKENS = ["ec2", "latest", "api", "token"]
# What a failed exchange raises: the upstream is unreachable, reset or too slow.
UpstreamError = (aiohttp.ClientError, TimeoutError, OSError)


def is_forbidden_token_put(method: str, path: str, headers: Iterable[tuple[str, str]]) -> bool:
    """AWS's SSRF rule: a token PUT that already went through a forwarding proxy is refused.

    ``path`` is the decoded path (aiohttp's ``request.path``); it is normalised exactly as the
    metadata API routes it, so ``/ec2/latest/api/token`` or dot segments cannot slip past.
    """
    if method.upper() != "PUT" or path_tokens(path.split("?", 1)[0]) != TOKEN_TOKENS:
        return False
    return any(name.lower() == "x-forwarded-for" for name, _ in headers)


def refuse_forwarded_token_put(request: web.BaseRequest) -> web.Response | None:
    """The 403 for a forwarded token PUT, or None when ``request`` may pass."""
    if is_forbidden_token_put(request.method, request.path, request.headers.items()):
        return plain(403, "A token request must not carry X-Forwarded-For.")
    return None


class Relay:
    """One keep-alive pool to ``base`` (a URL prefix) and the exchange over it.

    ``keepalive`` must stay below the upstream server's keep-alive timeout, so the pool never
    reuses a connection the server is closing.
    """

    def __init__(
        self,
        base: str,
        connector: Callable[..., aiohttp.BaseConnector],
        *,
        timeout: float,
        pool: int,
        keepalive: float,
        connect_timeout: float | None = None,
    ) -> None:
        self._base = base
        self._connector = connector
        self._total = timeout
        self._connect = connect_timeout
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout)
        self._pool = pool
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=self._connector(limit=self._pool, keepalive_timeout=self._keepalive),
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self, method: str, path_qs: str, headers: CIMultiDict[str], body: bytes | None
    ) -> web.Response:
        """The upstream's whole answer, end-to-end headers only; raises :data:`UpstreamError`.

        A change long-poll (``wait_for_change``) gets the wait it asks for on top of the timeout.
        """
        if self._session is None:
            raise RuntimeError("Relay.start() was not called")
        extension = relay_extension(path_qs)
        timeout = (
            aiohttp.ClientTimeout(total=self._total + extension, sock_connect=self._connect)
            if extension
            else None
        )
        async with self._session.request(
            method,
            self._base + path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
            timeout=timeout or self._timeout,
        ) as resp:
            payload = await resp.read()
            # One copy in C, then out with the few fields present (no per-header lowering).
            kept = CIMultiDict(resp.headers)
            for name in DROPPED_FROM_UPSTREAM:
                if name in kept:
                    del kept[name]
            return web.Response(status=resp.status, body=payload, headers=kept)
