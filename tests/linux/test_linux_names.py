"""Link names fit in 15 characters and keep as much of the id as possible."""

from __future__ import annotations

import pytest

from cloudmeta import linux

NET = "6f1c2b4a-9d3e-4c5f-8a7b-0e1d2c3b4a59"


def test_bridge_names_follow_neutron_and_fit() -> None:
    assert linux.bridge_name("", NET) == "brq6f1c2b4a-9d"
    assert linux.bridge_name("cmt-", NET) == "cmt-brq6f1c2b4a"
    assert len(linux.link_name("cmt-", "tap", NET)) == 15
    assert linux.link_name("", "qr-", "ab") == "qr-ab"


def test_too_long_prefix_is_refused_with_advice() -> None:
    with pytest.raises(linux.LinuxError, match="shorten the device prefix"):
        linux.bridge_name("cmt-very-long-", NET)
