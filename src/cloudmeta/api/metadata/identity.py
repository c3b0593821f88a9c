"""Who is asking: Nova's signed-header check, in Nova's order with Nova's messages."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from multidict import CIMultiDictProxy

from .errors import MetadataError

__all__ = ["Caller", "Headers", "sign_instance_id", "signed_caller"]


Headers = CIMultiDictProxy[str]


@dataclass(frozen=True, slots=True)
class Caller:
    instance_id: str
    tenant_id: str | None
    address: str | None


def sign_instance_id(secret: bytes, instance_id: str) -> str:
    return hmac.new(secret, instance_id.encode(), hashlib.sha256).hexdigest()


def _values(headers: Headers, name: str) -> list[str]:
    return headers.getall(name, [])


def signed_caller(headers: Headers, secret: bytes) -> Caller:
    """``_handle_instance_id_request``: 400 for missing/multiple headers, 403 for the signature."""
    instance_ids = _values(headers, "X-Instance-ID")
    signatures = _values(headers, "X-Instance-ID-Signature")
    tenants = _values(headers, "X-Tenant-ID")
    if not instance_ids:
        raise MetadataError(400, "X-Instance-ID header is missing from request.")
    if not signatures:
        raise MetadataError(400, "X-Instance-ID-Signature header is missing from request.")
    if not tenants:
        raise MetadataError(400, "X-Tenant-ID header is missing from request.")
    if len(instance_ids) > 1:
        raise MetadataError(400, "Multiple X-Instance-ID headers found within request.")
    if len(tenants) > 1:
        raise MetadataError(400, "Multiple X-Tenant-ID headers found within request.")
    instance_id = instance_ids[0]
    expected = sign_instance_id(secret, instance_id)
    # Nova compares against the first signature header; so do we, in constant time.
    if not signatures[0] or not hmac.compare_digest(expected.encode(), signatures[0].encode()):
        raise MetadataError(403, "Invalid proxy request signature.")
    forwarded = _values(headers, "X-Forwarded-For")
    address = forwarded[0].split(",")[0].strip() if forwarded else None
    return Caller(instance_id, tenants[0], address)
