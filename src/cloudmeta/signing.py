"""The instance-id signature the agent adds and the metadata API checks (Nova/Neutron's
``X-Instance-ID-Signature``): one implementation for both sides of the shared secret."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["sign_instance_id", "verify_instance_id"]


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
