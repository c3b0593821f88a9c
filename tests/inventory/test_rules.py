"""Pure rules: address arithmetic, MACs, key fingerprints, Nova's limits."""

from __future__ import annotations

import ipaddress

import pytest

from cloudmeta.inventory import Invalid, rules

NET = ipaddress.ip_network("192.0.2.0/24")


def test_default_pools_skip_network_broadcast_and_gateway() -> None:
    gateway = ipaddress.ip_address("192.0.2.1")
    assert rules.default_pools(NET, gateway) == [{"start": "192.0.2.2", "end": "192.0.2.254"}]
    middle = ipaddress.ip_address("192.0.2.100")
    assert rules.default_pools(NET, middle) == [
        {"start": "192.0.2.1", "end": "192.0.2.99"},
        {"start": "192.0.2.101", "end": "192.0.2.254"},
    ]
    v6 = ipaddress.ip_network("2001:db8::/64")
    assert rules.default_pools(v6, None)[0]["start"] == "2001:db8::1"


def test_first_free_takes_the_lowest_unused_address() -> None:
    pools = [{"start": "192.0.2.2", "end": "192.0.2.4"}]
    used = {ipaddress.ip_address("192.0.2.2")}
    assert str(rules.first_free(pools, used)) == "192.0.2.3"
    used |= {ipaddress.ip_address("192.0.2.3"), ipaddress.ip_address("192.0.2.4")}
    assert rules.first_free(pools, used) is None


@pytest.mark.parametrize(
    ("cidr", "message"),
    [("192.0.2.5/24", "host bits"), ("banana", "not a valid CIDR"), ("192.0.2.0/33", "CIDR")],
)
def test_bad_cidr_names_the_field(cidr: str, message: str) -> None:
    with pytest.raises(Invalid, match=f"cidr: .*{message}"):
        rules.parse_cidr(cidr)


def test_gateway_outside_or_on_network_address_is_refused() -> None:
    with pytest.raises(Invalid, match=r"gateway_ip: 198\.51\.100\.1 is outside"):
        rules.check_gateway(NET, ipaddress.ip_address("198.51.100.1"))
    with pytest.raises(Invalid, match=r"gateway_ip: .*network or broadcast"):
        rules.check_gateway(NET, ipaddress.ip_address("192.0.2.255"))


def test_pools_must_be_inside_ordered_and_disjoint() -> None:
    gateway = ipaddress.ip_address("192.0.2.1")
    ok = rules.check_pools(NET, [{"start": "192.0.2.10", "end": "192.0.2.20"}], gateway)
    assert ok == [{"start": "192.0.2.10", "end": "192.0.2.20"}]
    bad = [
        [{"start": "192.0.2.20", "end": "192.0.2.10"}],
        [{"start": "192.0.2.1", "end": "192.0.2.10"}],
        [{"start": "198.51.100.1", "end": "198.51.100.2"}],
        [
            {"start": "192.0.2.10", "end": "192.0.2.20"},
            {"start": "192.0.2.15", "end": "192.0.2.30"},
        ],
    ]
    for pools in bad:
        with pytest.raises(Invalid, match="allocation_pools"):
            rules.check_pools(NET, pools, gateway)


def test_macs_are_openstack_style_and_validated() -> None:
    mac = rules.random_mac()
    assert mac.startswith("fa:16:3e:") and len(mac) == 17
    assert rules.normalize_mac("FA-16-3E-00-00-01") == "fa:16:3e:00:00:01"
    for bad in ("fa:16:3e", "01:00:5e:00:00:01", "zz:16:3e:00:00:01"):
        with pytest.raises(Invalid, match="mac_address"):
            rules.normalize_mac(bad)


def test_keypair_fingerprint_is_novas_md5() -> None:
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBGk5H7xRJXzAj9+ut6lVyCcAyWkO0WZlG0bzJnDPFWk cmt"
    fingerprint, key_type = rules.keypair_fingerprint(key)
    assert key_type == "ssh" and len(fingerprint.split(":")) == 16
    with pytest.raises(Invalid, match="public_key"):
        rules.keypair_fingerprint("ssh-rsa not-base64")


def test_novas_limits() -> None:
    rules.check_user_data("a" * 65532)
    with pytest.raises(Invalid, match="user_data: 65536"):
        rules.check_user_data("a" * 65536)
    with pytest.raises(Invalid, match="user_data: not valid base64"):
        rules.check_user_data("!!!")
    with pytest.raises(Invalid, match="metadata: 129 items"):
        rules.check_metadata({str(i): "v" for i in range(129)})
    with pytest.raises(Invalid, match="metadata: key"):
        rules.check_metadata({"k" * 256: "v"})
    with pytest.raises(Invalid, match="metadata: value"):
        rules.check_metadata({"k": "v" * 256})


def test_sanitize_hostname_like_nova() -> None:
    assert rules.sanitize_hostname("My Server_1!") == "my-server-1"
    assert rules.sanitize_hostname("...") == "server"
