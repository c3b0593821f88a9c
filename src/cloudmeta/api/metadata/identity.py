"""Who is asking: Nova's signed-header check, in Nova's order with Nova's messages."""

from __future__ import annotations

from multidict import CIMultiDictProxy

from cloudmeta.signing import InstanceIdentity, sign_instance_id, verify_instance_id

from .errors import MetadataError

__all__ = ["Caller", "Headers", "SignatureCheck", "sign_instance_id", "signed_caller"]


Headers = CIMultiDictProxy[str]


Caller = InstanceIdentity  # the headers' identity, or the in-process agent's


class SignatureCheck:
    """The HMAC check, remembering the (instance id, signature) pairs found valid.

    A hot instance then costs a set lookup instead of an HMAC. Only valid pairs are kept (one
    per instance, since the signature is a function of the id), so forged headers cannot grow
    the set; the bound only guards against a huge inventory.
    """

    def __init__(self, secret: bytes, limit: int = 65536) -> None:
        self._secret = secret
        self._limit = limit
        self._valid: set[tuple[str, str]] = set()

    def __call__(self, instance_id: str, signature: str) -> bool:
        key = (instance_id, signature)
        if key in self._valid:
            return True
        # Nova compares against the first signature header; so do we, in constant time.
        if not verify_instance_id(self._secret, instance_id, signature):
            return False
        if len(self._valid) >= self._limit:
            self._valid.clear()
        self._valid.add(key)
        return True


def signed_caller(headers: Headers, secret: bytes | SignatureCheck) -> Caller:
    """``_handle_instance_id_request``: 400 for missing/multiple headers, 403 for the signature.

    ``secret`` is the shared secret, or a :class:`SignatureCheck` over it (the server's, which
    remembers the valid pairs).
    """
    check = secret if isinstance(secret, SignatureCheck) else SignatureCheck(secret)
    values = headers.getall  # every header read as all its values (Nova refuses repeats)
    instance_ids = values("X-Instance-ID", ())
    signatures = values("X-Instance-ID-Signature", ())
    tenants = values("X-Tenant-ID", ())
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
    if not check(instance_id, signatures[0]):
        raise MetadataError(403, "Invalid proxy request signature.")
    forwarded = values("X-Forwarded-For", ())
    address = forwarded[0].split(",")[0].strip() if forwarded else None
    return Caller(instance_id, tenants[0], address)
