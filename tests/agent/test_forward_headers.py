"""What the agent sends the API: the proxies' header rule plus the signed identity."""

from __future__ import annotations

from cloudmeta.agent.forward import api_headers
from cloudmeta.agent.lookup import Owner
from cloudmeta.proxy.headers import clean_headers
from cloudmeta.signing import InstanceSigner, sign_instance_id

INCOMING = [
    ("Accept", "*/*"),
    ("X-Forwarded-For", "192.0.2.99"),
    ("x-instance-id", "spoofed"),
    ("X-Instance-ID-Signature", "0" * 64),
    ("X-Tenant-ID", "spoofed"),
    ("X-Neutron-Network-ID", "spoofed"),
    ("Connection", "close"),
    ("Host", "169.254.169.254"),
    ("X-aws-ec2-metadata-token", "t"),
]


def test_api_headers_are_the_proxy_rule_plus_the_signed_identity() -> None:
    owner = Owner(instance_id="cmt-i", project_id="cmt-p")
    out = api_headers(INCOMING, "192.0.2.10", owner, InstanceSigner("s3cret"))
    base = clean_headers(INCOMING, "192.0.2.10", None)
    identity = {
        "X-Instance-ID": "cmt-i",
        "X-Tenant-ID": "cmt-p",
        "X-Instance-ID-Signature": sign_instance_id("s3cret", "cmt-i"),
    }
    assert sorted(out.items()) == sorted([*base.items(), *identity.items()])
    assert out.getall("X-Forwarded-For") == ["192.0.2.10"]
    assert out.getall("X-Instance-ID") == ["cmt-i"]
    assert "Connection" not in out and "Host" not in out
