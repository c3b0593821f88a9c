"""Forwarding to the metadata API over a keep-alive pool, and mapping its answer.

What the instance sees is decided here: the API's status passes through, except 403 (the
shared secrets differ: logged loudly, since the instance cannot tell) and an unreachable,
failing or slow API, which becomes 503 with ``Retry-After`` within ``nova_metadata_timeout``
(plus, for a change long-poll, the wait it asks for: :mod:`cloudmeta.http.longpoll`). With a
list of API hosts a dead one is skipped and the request answered by the next (Forwarder).
"""

from __future__ import annotations

from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.agent.lookup import Owner
from cloudmeta.agent.upstreams import Upstreams
from cloudmeta.config import Config
from cloudmeta.http import UpstreamError, unavailable
from cloudmeta.logs import get_logger
from cloudmeta.proxy.headers import clean_headers
from cloudmeta.signing import sign_instance_id
from cloudmeta.statefiles import shared_secret

__all__ = ["Forwarder", "api_headers"]

_RETRYABLE = frozenset({"GET", "HEAD"})

log = get_logger("agent")


def api_headers(
    incoming: Iterable[tuple[str, str]], caller_ip: str, owner: Owner, secret: str
) -> CIMultiDict[str]:
    """The caller's end-to-end headers (the proxies' own rule, :func:`clean_headers`) plus
    the signed identity, nothing it could forge."""
    out = clean_headers(incoming, caller_ip, None)
    out["X-Instance-ID"] = owner.instance_id
    out["X-Tenant-ID"] = owner.project_id
    out["X-Instance-ID-Signature"] = sign_instance_id(secret, owner.instance_id)
    return out


class Forwarder:
    """Signs and forwards to the metadata API host(s) (:class:`Upstreams`).

    The metadata API closes connections idle for ``metadata_proxy_keepalive_timeout``; the
    pools let go of them at half that, so they never reuse one the API is closing.

    With several hosts a request that fails on one goes on to the next at once (GET and HEAD
    always; a request with a body only when it never reached the host), so an instance sees no
    error while another host answers; with every host down it gets 503 with ``Retry-After``.
    A failed host is tried last until it answers a probe again.
    """

    def __init__(self, config: Config) -> None:
        self._secret = shared_secret(config)
        self._upstreams = Upstreams(config)

    @property
    def bases(self) -> list[str]:
        """The hosts' URLs in this agent's order of preference."""
        return [u.base for u in self._upstreams.all]

    async def start(self) -> None:
        await self._upstreams.start()

    async def close(self) -> None:
        await self._upstreams.close()

    async def forward(
        self,
        method: str,
        path_qs: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        caller_ip: str,
        owner: Owner,
    ) -> web.Response:
        out_headers = api_headers(headers, caller_ip, owner, self._secret)
        resp: web.Response | None = None
        upstreams = self._upstreams
        for upstream in upstreams.candidates():
            try:
                resp = await upstreams.send(upstream, method, path_qs, out_headers, body or None)
            except UpstreamError as exc:
                (log.warning if upstreams.failed(upstream) else log.debug)(
                    "metadata API unreachable",
                    url=upstream.base,
                    error=str(exc) or type(exc).__name__,
                    instance_id=owner.instance_id,
                    others=len(upstreams.all) - 1,
                )
                if method in _RETRYABLE or isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                break
            upstreams.answered(upstream)
            break
        if resp is None:
            return unavailable(
                "The remote metadata server is temporarily unavailable. Please try again later."
            )
        if resp.status == 403:
            log.error(
                "metadata API refused the signature: the shared secrets differ "
                "(metadata_proxy_shared_secret of the agent and of the metadata API)",
                instance_id=owner.instance_id,
            )
        elif resp.status >= 500:
            log.warning("metadata API failed", status=resp.status, instance_id=owner.instance_id)
            return unavailable(
                "The remote metadata server experienced an error. Please try again later."
            )
        return resp
