"""Forwarding to the metadata API over a keep-alive pool, and mapping its answer.

In the all-in-one the metadata API runs in the agent's own process and loop: a request without
a body is then handed to the API's handler directly (:meth:`Forwarder.forward_local`): the
instance's request as it came and the identity the agent found (instance, project, caller's
address), which the API takes in place of the signed headers. No loopback HTTP exchange (a
third of the event loop's time under load: bench/README.md), and no header rebuild, request
clone or HMAC check either: within one process the signature would only prove to the API what
the agent already knows.

What the instance sees is decided here: the API's status passes through, except 403 (the
shared secrets differ: logged loudly, since the instance cannot tell) and an unreachable,
failing or slow API, which becomes 503 with ``Retry-After`` within ``nova_metadata_timeout``
(plus, for a change long-poll, the wait it asks for: :mod:`cloudmeta.http.longpoll`). With a
list of API hosts a dead one is skipped and the request answered by the next (Forwarder).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.agent.lookup import Owner
from cloudmeta.agent.upstreams import Upstreams
from cloudmeta.config import Config
from cloudmeta.http import UpstreamError, unavailable
from cloudmeta.http.longpoll import relay_extension
from cloudmeta.logs import throttled_logger
from cloudmeta.proxy.headers import clean_headers
from cloudmeta.signing import InstanceIdentity, InstanceSigner, LocalMetadataApi
from cloudmeta.statefiles import shared_secret

__all__ = ["Forwarder", "api_headers"]

_RETRYABLE = frozenset({"GET", "HEAD"})


def api_headers(
    incoming: Iterable[tuple[str, str]], caller_ip: str, owner: Owner, sign: InstanceSigner
) -> CIMultiDict[str]:
    """The caller's end-to-end headers (the proxies' own rule, :func:`clean_headers`) plus
    the signed identity, nothing it could forge (added, not set: :func:`clean_headers`
    dropped every caller's copy)."""
    out = clean_headers(incoming, caller_ip, None)
    out.add("X-Instance-ID", owner.instance_id)
    out.add("X-Tenant-ID", owner.project_id)
    out.add("X-Instance-ID-Signature", sign(owner.instance_id))
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

    def __init__(self, config: Config, local: LocalMetadataApi | None = None) -> None:
        self._local = local
        self._timeout = config.nova_metadata_timeout
        self._sign = InstanceSigner(shared_secret(config))
        self._log = throttled_logger("agent")  # a caller can drive these lines
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
    ) -> web.StreamResponse:
        out_headers = api_headers(headers, caller_ip, owner, self._sign)
        resp: web.Response | None = None
        upstreams = self._upstreams
        for upstream in upstreams.candidates():
            try:
                resp = await upstreams.send(upstream, method, path_qs, out_headers, body or None)
            except UpstreamError as exc:
                (self._log.warning if upstreams.failed(upstream) else self._log.debug)(
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
        return self._mapped(resp, owner)

    @property
    def local(self) -> bool:
        """Whether the metadata API answers in this process."""
        return self._local is not None

    async def forward_local(
        self, request: web.BaseRequest, caller_ip: str, owner: Owner
    ) -> web.StreamResponse:
        """The in-process API's answer to ``request`` (no body) for ``owner``, within the same
        ``nova_metadata_timeout`` (plus a long-poll's wait) as over HTTP. The identity goes as
        an object: the caller's own identity headers are never read by the API."""
        assert self._local is not None
        identity = InstanceIdentity(owner.instance_id, owner.project_id, caller_ip)
        limit = self._timeout + relay_extension(request.rel_url.raw_path_qs)
        try:
            async with asyncio.timeout(limit):
                resp = await self._local(request, identity)
        except TimeoutError:
            self._log.warning("metadata API too slow", timeout=limit, instance_id=owner.instance_id)
            return unavailable(
                "The remote metadata server is temporarily unavailable. Please try again later."
            )
        return self._mapped(resp, owner)

    def _mapped(self, resp: web.StreamResponse, owner: Owner) -> web.StreamResponse:
        """What the instance sees of the API's answer."""
        if resp.status == 403:
            self._log.error(
                "metadata API refused the signature: the shared secrets differ "
                "(metadata_proxy_shared_secret of the agent and of the metadata API)",
                instance_id=owner.instance_id,
            )
        elif resp.status >= 500:
            self._log.warning(
                "metadata API failed", status=resp.status, instance_id=owner.instance_id
            )
            return unavailable(
                "The remote metadata server experienced an error. Please try again later."
            )
        return resp
