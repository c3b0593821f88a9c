"""The signed instance-identity document: a key and self-signed certificate in ``state_path``.

``signature`` is base64 RSA-SHA256 (PKCS#1 v1.5) over the document bytes, ``pkcs7`` a base64
DER PKCS#7 signed-data with the document as content, as AWS serves them. Verification needs
only the public certificate (``cloudmeta identity verify``).
"""

from __future__ import annotations

import base64
import datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from cloudmeta.statefiles import read_or_create

__all__ = ["CERT_FILE", "KEY_FILE", "IdentitySigner", "verify_signature"]

KEY_FILE = "identity/identity_key.pem"
CERT_FILE = "identity/identity_cert.pem"
_VALIDITY = datetime.timedelta(days=3650)


def _new_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_cert(key: rsa.RSAPrivateKey) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudmeta instance identity")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class IdentitySigner:
    """Signs identity documents with the deployment's key."""

    def __init__(self, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> None:
        self._key = key
        self.cert = cert

    @classmethod
    def from_state(cls, state_path: Path) -> IdentitySigner:
        key_pem = read_or_create(state_path / KEY_FILE, make=_new_key)
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError(f"{state_path / KEY_FILE}: not an RSA key; delete it to regenerate")
        cert_pem = read_or_create(state_path / CERT_FILE, make=lambda: _new_cert(key))
        return cls(key, x509.load_pem_x509_certificate(cert_pem))

    def signature(self, document: bytes) -> bytes:
        raw = self._key.sign(document, padding.PKCS1v15(), hashes.SHA256())
        return base64.encodebytes(raw).rstrip(b"\n")

    def pkcs7(self, document: bytes) -> bytes:
        der = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(document)
            .add_signer(self.cert, self._key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])
        )
        return base64.encodebytes(der).rstrip(b"\n")


def verify_signature(cert_pem: bytes, document: bytes, signature_b64: bytes) -> bool:
    """True if ``signature_b64`` is the certificate's key's signature over ``document``."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    public = cert.public_key()
    if not isinstance(public, rsa.RSAPublicKey):
        return False
    try:
        public.verify(
            base64.b64decode(signature_b64), document, padding.PKCS1v15(), hashes.SHA256()
        )
    except (InvalidSignature, ValueError):
        return False
    return True
