"""Pure identity rules: who the caller is, the signature Nova checks, the rate limit."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from cloudmeta.agent import AgentError, Caller, caller_from_forwarded, sign_instance_id
from cloudmeta.agent.identity import mac_from_neighbours
from cloudmeta.linux.peer import Neighbour


def test_ipv4_caller() -> None:
    assert caller_from_forwarded(" 192.0.2.5 ") == Caller("192.0.2.5")


def test_ipv4_mapped_ipv6_becomes_ipv4() -> None:
    assert caller_from_forwarded("::ffff:198.51.100.7") == Caller("198.51.100.7")


def test_link_local_caller_is_found_by_the_frames_mac_not_its_eui64() -> None:
    # fe80::f816:3eff:fe12:3456 encodes fa:16:3e:12:34:56, but any guest may pick it: only the
    # MAC the proxy saw counts
    assert caller_from_forwarded("fe80::f816:3eff:fe12:3456").mac is None
    caller = caller_from_forwarded("fe80::f816:3eff:fe12:3456%7", "FA:16:3E:00:00:09")
    assert caller == Caller("fe80::f816:3eff:fe12:3456", "fa:16:3e:00:00:09", True, 7)


def test_stable_privacy_link_local_with_its_mac() -> None:
    caller = caller_from_forwarded("fe80::1234:5678:9abc:def0", "fa:16:3e:00:00:01")
    assert (caller.mac, caller.link_local, caller.zone) == ("fa:16:3e:00:00:01", True, None)


def test_a_mac_is_ignored_for_ipv4_and_global_ipv6_callers() -> None:
    assert caller_from_forwarded("2001:db8::5", "fa:16:3e:00:00:01") == Caller("2001:db8::5")
    assert caller_from_forwarded("192.0.2.5", "fa:16:3e:00:00:01") == Caller("192.0.2.5")


@pytest.mark.parametrize("bad", ["", "fa:16:3e", "zz:16:3e:00:00:01", "fa:16:3e:00:00:01:02"])
def test_bad_source_mac_is_refused(bad: str) -> None:
    if not bad:
        assert caller_from_forwarded("fe80::1", bad).mac is None
        return
    with pytest.raises(AgentError, match="MAC"):
        caller_from_forwarded("fe80::1", bad)


def _table(*rows: tuple[str, int, str]) -> list[Neighbour]:
    return [Neighbour(address, ifindex, mac) for address, ifindex, mac in rows]


def test_mac_from_an_in_memory_neighbour_table() -> None:
    table = _table(
        ("fe80::1", 2, "fa:16:3e:00:00:01"),
        ("fe80::2", 2, "fa:16:3e:00:00:02"),
        ("fe80::1", 3, "fa:16:3e:00:00:03"),  # the same address on another router interface
        ("2001:db8::1", 2, "fa:16:3e:00:00:04"),
    )
    assert mac_from_neighbours(Caller("fe80::2", link_local=True), table) == "fa:16:3e:00:00:02"
    # one address on two interfaces: the zone decides, without it nobody is guessed
    assert mac_from_neighbours(Caller("fe80::1", link_local=True, zone=3), table) == (
        "fa:16:3e:00:00:03"
    )
    assert mac_from_neighbours(Caller("fe80::1", link_local=True), table) is None
    assert mac_from_neighbours(Caller("fe80::9", link_local=True), table) is None


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
