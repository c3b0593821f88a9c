"""The instance-id signature the agent adds and the metadata API checks (Nova/Neutron's
``X-Instance-ID-Signature``): one implementation for both sides of the shared secret."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from aiohttp import web

__all__ = [
    "InstanceIdentity",
    "InstanceSigner",
    "LocalMetadataApi",
    "sign_instance_id",
    "verify_instance_id",
]


class InstanceIdentity(NamedTuple):
    """Who a metadata request is for, as the metadata API knows it: what the signed headers
    say (``X-Instance-ID``, ``X-Tenant-ID``, the first ``X-Forwarded-For``), or what the agent
    of the same process found and hands over without them. (A tuple: built per request, at
    half a frozen dataclass's cost.)"""

    instance_id: str
    tenant_id: str | None
    address: str | None


# The metadata API's handler when it runs in the agent's process (all-in-one): the request as
# the instance sent it and the identity the agent found; no signed headers, no HMAC, no clone.
LocalMetadataApi = Callable[[web.BaseRequest, InstanceIdentity], Awaitable[web.StreamResponse]]

SIGNATURES_KEPT = 65536  # instances whose signature the agent remembers


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign_instance_id(secret: str | bytes, instance_id: str) -> str:
    """``hex(HMAC-SHA256(secret, instance_id))`` as Nova checks it (signed even if empty)."""
    return hmac.new(_key(secret), instance_id.encode(), hashlib.sha256).hexdigest()


def verify_instance_id(secret: str | bytes, instance_id: str, signature: str) -> bool:
    """Whether ``signature`` signs ``instance_id``; constant-time, an empty one never does."""
    if not signature:
        return False
    expected = sign_instance_id(secret, instance_id)
    return hmac.compare_digest(expected.encode(), signature.encode(errors="replace"))


class InstanceSigner:
    """The agent's side: :func:`sign_instance_id` memoised per instance id.

    The signature is a function of the id alone, so a hot instance costs a dict lookup
    instead of an HMAC. Only ids of ports the agent found are signed (never caller input), and
    ``limit`` bounds the table for a huge inventory (it starts afresh when full).
    """

    __slots__ = ("_key", "_known", "_limit")

    def __init__(self, secret: str | bytes, limit: int = SIGNATURES_KEPT) -> None:
        self._key = _key(secret)
        self._limit = limit
        self._known: dict[str, str] = {}

    def __call__(self, instance_id: str) -> str:
        signature = self._known.get(instance_id)
        if signature is None:
            signature = sign_instance_id(self._key, instance_id)
            if len(self._known) >= self._limit:
                self._known.clear()
            self._known[instance_id] = signature
        return signature

    def __len__(self) -> int:
        return len(self._known)
