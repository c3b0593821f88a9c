"""Golden tests of the router namespace's iptables-restore text (pure, no root)."""

from __future__ import annotations

import pytest

from cloudmeta.l3.rules import NAT_CHAIN, metadata_chains, redirect_rule
from cloudmeta.linux.iptables import render_apply

# As iptables-save prints Neutron's rules, in chains of ours; jumps inserted once.
GOLDEN = """\
*mangle
:cloudmeta-l3-mark - [0:0]
-A cloudmeta-l3-mark -d 169.254.169.254/32 -i cmt-qr-+ -p tcp -m tcp --dport 80 \
-j MARK --set-xmark 0x1/0xffff
-I PREROUTING 1 -j cloudmeta-l3-mark
COMMIT
*nat
:cloudmeta-l3-redirect - [0:0]
-A cloudmeta-l3-redirect -d 169.254.169.254/32 -i cmt-qr-+ -p tcp -m tcp --dport 80 \
-j REDIRECT --to-ports 9697
-I PREROUTING 1 -j cloudmeta-l3-redirect
COMMIT
*filter
:cloudmeta-l3-input - [0:0]
-A cloudmeta-l3-input -i cmt-qr-+ -p tcp -m tcp --dport 9697 -m mark --mark 0x1/0xffff -j ACCEPT
-A cloudmeta-l3-input -p tcp -m tcp --dport 9697 -j DROP
-I INPUT 1 -j cloudmeta-l3-input
COMMIT
"""


def test_router_rules_match_neutron_golden() -> None:
    assert render_apply(metadata_chains("cmt-qr-", 9697), saved="") == GOLDEN


def test_second_apply_adds_no_second_jump() -> None:
    saved = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j cloudmeta-l3-redirect\nCOMMIT\n"
    text = render_apply(metadata_chains("qr-", 9697), saved=saved)
    assert "-I PREROUTING 1 -j cloudmeta-l3-redirect" not in text
    assert "-I PREROUTING 1 -j cloudmeta-l3-mark" in text


def test_proxy_port_and_prefix_are_used_everywhere() -> None:
    text = render_apply(metadata_chains("qr-", 19697), saved="")
    assert "-i qr-+ " in text and "cmt-" not in text
    assert "--to-ports 19697" in text and "--dport 19697 -j DROP" in text
    assert "9697 " not in text.replace("19697", "")


def test_redirect_rule_is_the_nat_chain_rule() -> None:
    (nat,) = [c for c in metadata_chains("qr-", 9697) if c.table == "nat"]
    assert nat.name == NAT_CHAIN and nat.rules == (redirect_rule("qr-+", 9697),)


def test_chains_hook_builtin_chains() -> None:
    assert {(c.table, c.jump_from) for c in metadata_chains("qr-", 9697)} == {
        ("mangle", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "INPUT"),
    }


def test_accept_comes_before_drop() -> None:
    (filt,) = [c for c in metadata_chains("qr-", 9697) if c.table == "filter"]
    assert filt.rules[0].endswith("-j ACCEPT") and filt.rules[1].endswith("-j DROP")


@pytest.mark.parametrize("prefix", ["", "qr -", "q\tr"])
def test_bad_interface_prefix_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="interface prefix"):
        metadata_chains(prefix, 9697)
