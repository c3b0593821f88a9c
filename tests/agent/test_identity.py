"""Pure identity rules: who the caller is, the signature Nova checks, the rate limit."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cloudmeta.agent import AgentError, Caller, caller_from_forwarded, sign_instance_id


def test_ipv4_caller() -> None:
    assert caller_from_forwarded(" 192.0.2.5 ") == Caller("192.0.2.5")


def test_ipv4_mapped_ipv6_becomes_ipv4() -> None:
    assert caller_from_forwarded("::ffff:198.51.100.7") == Caller("198.51.100.7")


def test_link_local_caller_is_found_by_mac_from_eui64() -> None:
    # fa:16:3e:12:34:56 -> fe80::f816:3eff:fe12:3456 (U/L bit flipped)
    caller = caller_from_forwarded("fe80::f816:3eff:fe12:3456%ns-1")
    assert caller.mac == "fa:16:3e:12:34:56"
    assert caller.ip == "fe80::f816:3eff:fe12:3456"


def test_link_local_without_eui64_has_no_mac() -> None:
    assert caller_from_forwarded("fe80::1234:5678:9abc:def0").mac is None


def test_global_ipv6_caller_by_ip() -> None:
    assert caller_from_forwarded("2001:db8::5") == Caller("2001:db8::5")


@pytest.mark.parametrize("bad", ["", "192.0.2.1, 192.0.2.2", "instance", "999.1.1.1"])
def test_bad_forwarded_for_is_refused(bad: str) -> None:
    with pytest.raises(AgentError, match="X-Forwarded-For"):
        caller_from_forwarded(bad)


def test_signature_is_hmac_sha256_hex() -> None:
    expected = hmac.new(b"s3cret", b"inst-1", hashlib.sha256).hexdigest()
    assert sign_instance_id("s3cret", "inst-1") == expected
    assert len(sign_instance_id("", "inst-1")) == 64  # Neutron signs even with no secret
