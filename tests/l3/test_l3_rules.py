"""Golden tests of the router namespace's iptables-restore text (pure, no root)."""

from __future__ import annotations

import pytest

from cloudmeta.l3.rules import Chain, metadata_chains, redirect_rule, render_restore

GOLDEN = """\
*mangle
:cloudmeta-l3-PREROUTING - [0:0]
-A cloudmeta-l3-PREROUTING -d 169.254.169.254/32 -i cmt-qr-+ -p tcp -m tcp --dport 80 \
-j MARK --set-xmark 0x1/0xffff
COMMIT
*nat
:cloudmeta-l3-PREROUTING - [0:0]
-A cloudmeta-l3-PREROUTING -d 169.254.169.254/32 -i cmt-qr-+ -p tcp -m tcp --dport 80 \
-j REDIRECT --to-ports 9697
COMMIT
*filter
:cloudmeta-l3-INPUT - [0:0]
-A cloudmeta-l3-INPUT -i cmt-qr-+ -p tcp -m tcp --dport 9697 -m mark --mark 0x1/0xffff -j ACCEPT
-A cloudmeta-l3-INPUT -p tcp -m tcp --dport 9697 -j DROP
COMMIT
"""


def test_router_rules_match_neutron_golden() -> None:
    assert render_restore(metadata_chains("cmt-qr-", 9697)) == GOLDEN


def test_proxy_port_and_prefix_are_used_everywhere() -> None:
    text = render_restore(metadata_chains("qr-", 19697))
    assert "-i qr-+ " in text and "cmt-" not in text
    assert "--to-ports 19697" in text and "--dport 19697 -j DROP" in text
    assert "9697 " not in text.replace("19697", "")


def test_redirect_rule_is_the_nat_chain_rule() -> None:
    nat = next(c for c in metadata_chains("qr-", 9697) if c.table == "nat")
    assert nat.rules == (redirect_rule("qr-+", 9697),)


def test_chains_hook_builtin_chains_and_names_fit_iptables_limit() -> None:
    chains = metadata_chains("qr-", 9697)
    assert {(c.table, c.hook) for c in chains} == {
        ("mangle", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "INPUT"),
    }
    assert all(len(c.name) <= 28 for c in chains)


def test_accept_comes_before_drop() -> None:
    filt = next(c for c in metadata_chains("qr-", 9697) if c.table == "filter")
    assert filt.rules[0].endswith("-j ACCEPT") and filt.rules[1].endswith("-j DROP")


@pytest.mark.parametrize("prefix", ["", "qr -", "q\tr"])
def test_bad_interface_prefix_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="interface prefix"):
        metadata_chains(prefix, 9697)


def test_render_groups_chains_by_table() -> None:
    text = render_restore((Chain("nat", "PREROUTING", ("-j A",)), Chain("nat", "OUTPUT", ())))
    assert text.count("*nat") == 1 and text.count("COMMIT") == 1
