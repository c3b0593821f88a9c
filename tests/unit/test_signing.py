"""One instance-id signature for the agent and the API (cloudmeta.signing)."""

from __future__ import annotations

import hashlib
import hmac

from cloudmeta import signing
from cloudmeta.agent import identity as agent_identity


def test_signature_is_hmac_sha256_hex_of_the_instance_id() -> None:
    expected = hmac.new(b"s3cret", b"inst-1", hashlib.sha256).hexdigest()
    assert signing.sign_instance_id("s3cret", "inst-1") == expected
    assert signing.sign_instance_id(b"s3cret", "inst-1") == expected
    assert len(signing.sign_instance_id("", "inst-1")) == 64  # Neutron signs with no secret


def test_verify() -> None:
    good = signing.sign_instance_id("s3cret", "inst-1")
    assert signing.verify_instance_id("s3cret", "inst-1", good)
    assert signing.verify_instance_id(b"s3cret", "inst-1", good)
    assert not signing.verify_instance_id("other", "inst-1", good)
    assert not signing.verify_instance_id("s3cret", "inst-2", good)
    assert not signing.verify_instance_id("s3cret", "inst-1", "")
    assert not signing.verify_instance_id("s3cret", "inst-1", good.upper())
    assert not signing.verify_instance_id("s3cret", "inst-1", "\udcff" + good[1:])


def test_the_agent_signs_with_the_one_implementation() -> None:
    assert agent_identity.sign_instance_id is signing.sign_instance_id


def test_the_agent_signer_memoises_per_instance_within_a_bound() -> None:
    signer = signing.InstanceSigner("s3cret", limit=2)
    assert signer("inst-1") == signing.sign_instance_id("s3cret", "inst-1")
    assert signer("inst-1") == signing.sign_instance_id("s3cret", "inst-1")
    assert len(signer) == 1
    signer("inst-2")
    signer("inst-3")  # past the bound: the table starts afresh
    assert len(signer) == 1
    assert signer("inst-2") == signing.sign_instance_id(b"s3cret", "inst-2")
