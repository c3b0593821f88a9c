"""IMDSv2-style session tokens: stateless, HMAC-signed, bound to one instance, with a TTL.

A token is ``<expiry>.<instance id>.<mac>`` base64url-encoded; the key lives in
``state_path/metadata_token_key`` so tokens stay valid across a restart within their TTL.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from pathlib import Path

from cloudmeta.statefiles import read_or_create

from .errors import MetadataError

__all__ = [
    "TOKEN_HEADER",
    "TTL_HEADER",
    "TTL_MAX",
    "TTL_MIN",
    "TokenAuthority",
    "parse_ttl",
]

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TTL_MIN = 1
TTL_MAX = 21600
KEY_FILE = "metadata_token_key"


def parse_ttl(value: str | None) -> int:
    """The TTL a token PUT asks for; 400 naming the header and the range otherwise."""
    if value is None:
        raise MetadataError(400, f"{TTL_HEADER} header is missing from request.")
    try:
        ttl = int(value.strip())
    except ValueError:
        ttl = 0
    if not TTL_MIN <= ttl <= TTL_MAX:
        raise MetadataError(400, f"{TTL_HEADER} must be an integer from {TTL_MIN} to {TTL_MAX}.")
    return ttl


class TokenAuthority:
    """Issues and checks tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_state(cls, state_path: Path) -> TokenAuthority:
        return cls(read_or_create(state_path / KEY_FILE))

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()

    def issue(self, instance_id: str, ttl: int, now: float | None = None) -> str:
        expiry = int((time.time() if now is None else now) + ttl)
        payload = f"{expiry}.{instance_id}".encode()
        raw = payload + b"." + self._mac(payload)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def check(self, token: str, instance_id: str, now: float | None = None) -> None:
        """Raise 401 unless ``token`` is ours, unexpired and issued to ``instance_id``."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise MetadataError(401, "The session token is not valid.") from None
        # The MAC is 32 raw bytes and may itself contain b"."; split at a fixed offset.
        payload, mac = raw[:-33], raw[-32:]
        if (
            len(raw) < 34
            or raw[-33:-32] != b"."
            or not hmac.compare_digest(mac, self._mac(payload))
        ):
            raise MetadataError(401, "The session token is not valid.")
        expiry_text, _, owner = payload.decode(errors="replace").partition(".")
        if not hmac.compare_digest(owner.encode(), instance_id.encode()):
            raise MetadataError(401, "The session token belongs to another instance.")
        if int(expiry_text) < (time.time() if now is None else now):
            raise MetadataError(401, "The session token has expired; PUT /latest/api/token.")
