"""Forwarding to the metadata API over a keep-alive pool, and mapping its answer.

What the instance sees is decided here: the API's status passes through, except 403 (the
shared secrets differ: logged loudly, since the instance cannot tell) and an unreachable,
failing or slow API, which becomes 503 with ``Retry-After`` within ``nova_metadata_timeout``
(plus, for a change long-poll, the wait it asks for: :mod:`cloudmeta.http.longpoll`). With a
list of API hosts a dead one is skipped and the request answered by the next (Forwarder).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from cloudmeta.agent.lookup import Owner
from cloudmeta.config import Config
from cloudmeta.http import Relay, UpstreamError, unavailable
from cloudmeta.logs import get_logger
from cloudmeta.proxy.headers import clean_headers
from cloudmeta.signing import sign_instance_id
from cloudmeta.statefiles import shared_secret

__all__ = ["Forwarder", "api_headers"]

POOL_SIZE = 256
# With several metadata API hosts: how long a connect may take before the next host is tried
# (a dead host that drops packets instead of refusing), and how long a failed host is skipped.
FAILOVER_CONNECT_TIMEOUT = 1.0
DOWN_SECONDS = 2.0
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


@dataclass
class _Upstream:
    """One metadata API host: its pool, and until when it counts as down."""

    base: str
    relay: Relay
    down_until: float = 0.0


class Forwarder:
    """One keep-alive pool (a :class:`Relay`) per metadata API host of ``nova_metadata_host``.

    The metadata API closes connections idle for ``metadata_proxy_keepalive_timeout``; the
    pool lets go of them at half that, so it never reuses one the API is closing.

    With several hosts, each agent prefers them in a fixed order of its own (the list rotated
    by a hash of ``host``, so the agents of a cloud spread over the API hosts). A host that
    refuses, resets or does not connect within ``FAILOVER_CONNECT_TIMEOUT`` is down for
    ``DOWN_SECONDS`` and the request goes on to the next one at once (GET and HEAD always; a
    request with a body only when it never reached the host), so an instance sees no error
    while another host answers; with every host down it gets 503 with ``Retry-After``. After
    ``DOWN_SECONDS`` a host is tried again in its turn.
    """

    def __init__(self, config: Config) -> None:
        bases = config.nova_metadata_urls
        start = zlib.crc32(config.host.encode()) % len(bases)
        bases = bases[start:] + bases[:start]
        connect = FAILOVER_CONNECT_TIMEOUT if len(bases) > 1 else None
        self._secret = shared_secret(config)
        self._upstreams = [
            _Upstream(
                base,
                Relay(
                    base,
                    aiohttp.TCPConnector,
                    timeout=config.nova_metadata_timeout,
                    pool=POOL_SIZE,
                    keepalive=config.metadata_proxy_keepalive_timeout / 2,
                    connect_timeout=connect,
                ),
            )
            for base in bases
        ]

    @property
    def bases(self) -> list[str]:
        """The hosts' URLs in this agent's order of preference."""
        return [u.base for u in self._upstreams]

    async def start(self) -> None:
        for upstream in self._upstreams:
            await upstream.relay.start()

    async def close(self) -> None:
        for upstream in self._upstreams:
            await upstream.relay.close()

    def _candidates(self, now: float) -> list[_Upstream]:
        """Hosts up (in preference order), then those down (soonest back first)."""
        up = [u for u in self._upstreams if u.down_until <= now]
        down = sorted(
            (u for u in self._upstreams if u.down_until > now), key=lambda u: u.down_until
        )
        return up + down

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
        for upstream in self._candidates(time.monotonic()):
            try:
                resp = await upstream.relay.send(method, path_qs, out_headers, body or None)
            except UpstreamError as exc:
                self._failed(upstream, exc, owner)
                if method in _RETRYABLE or isinstance(exc, aiohttp.ClientConnectorError):
                    continue
                break
            upstream.down_until = 0.0
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

    def _failed(self, upstream: _Upstream, exc: BaseException, owner: Owner) -> None:
        was_up = upstream.down_until <= time.monotonic()
        upstream.down_until = time.monotonic() + DOWN_SECONDS
        (log.warning if was_up else log.debug)(
            "metadata API unreachable",
            url=upstream.base,
            error=str(exc) or type(exc).__name__,
            instance_id=owner.instance_id,
            others=len(self._upstreams) - 1,
        )
