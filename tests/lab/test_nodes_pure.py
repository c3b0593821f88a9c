"""The multi-node lab's pure parts: its shape, the nodes' configs, the localport's ebtables
rules and the failover summary, with literals (the end-to-end test is test_multinode.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from cloudmeta.agent.localport import LOCALPORT_MAC, isolation_rules
from cloudmeta.config import Config
from cloudmeta.lab.nodes.failover import summarize
from cloudmeta.lab.nodes.topology import (
    Secrets,
    api_config,
    api_hosts,
    database_name,
    node_config,
    node_services,
    plan,
    vni_of,
)

SECRETS = Secrets("cmt-token", "cmt-secret")


@pytest.fixture
def config(make_config: Callable[..., Config]) -> Config:
    """Without CLOUDMETA_* variables of the caller's shell (make_config drops them)."""
    return make_config(
        state_path="/tmp/cmt-x",
        namespace_prefix="cmt-ab12cd-",
        device_prefix="cmt-42",
        admin={"listen": "127.0.0.1", "port": 18774},
        api={"metadata_listen_port": 18775},
    )


def test_plan_names_roles_and_underlay_addresses() -> None:
    nodes = plan(2, 2)
    assert [(n.name, n.role, n.underlay_ip) for n in nodes] == [
        ("network-1", "network", "203.0.113.11"),
        ("network-2", "network", "203.0.113.12"),
        ("compute-1", "compute", "203.0.113.13"),
        ("compute-2", "compute", "203.0.113.14"),
    ]
    # Every network node a DHCP agent; the L3 agent on the first only; compute: the agent.
    assert [node_services(n) for n in nodes] == [
        ["dhcp-agent", "l3-agent"],
        ["dhcp-agent"],
        ["agent"],
        ["agent"],
    ]


def test_api_hosts_on_their_loopback_addresses_and_one_database(config: Config) -> None:
    one, two = api_hosts(config)
    assert (one.ip, one.metadata_port, one.admin_url) == (
        "127.0.0.11",
        18775,
        "http://127.0.0.1:18774",
    )
    assert (two.ip, two.admin_url) == ("127.0.0.12", "http://127.0.0.12:18774")
    assert database_name(config) == "cmt-lab-ab12cd"
    url = "postgresql://postgres@127.0.0.1:5432/cmt-lab-ab12cd"
    cfg = api_config(config, two, url, SECRETS)
    assert cfg.database.connection == url
    assert (cfg.api.metadata_listen, cfg.admin.listen) == ("127.0.0.12", "127.0.0.12")
    assert cfg.metadata_proxy_shared_secret.get_secret_value() == "cmt-secret"


def test_a_node_has_its_own_state_names_bridges_and_api_host(config: Config) -> None:
    node = plan(2, 2)[2]  # compute-1
    cfg = node_config(config, node, api_hosts(config)[1], SECRETS)
    assert str(cfg.state_path) == "/tmp/cmt-x/lab/nodes/compute-1"
    assert cfg.namespace_prefix == "cmt-ab12cd-compute-1-"
    assert cfg.bridge_namespace == "cmt-ab12cd-compute-1-fabric"
    assert cfg.host == "compute-1" and cfg.distributed_metadata
    assert (cfg.admin_url, cfg.nova_metadata_host) == ("http://127.0.0.12:18774", "127.0.0.12")
    assert cfg.admin_token is not None and cfg.admin_token.get_secret_value() == "cmt-token"
    assert cfg.device_prefix == "cmt-42"  # links live in the node's own namespaces


def test_vni_is_24_bits_of_the_network_id() -> None:
    assert vni_of("7f1e77cd-a7b3-49e1-b3f8-dc24a841c29d") == 0x7F1E77
    assert vni_of("00000000-0000-4000-8000-000000000000") == 1  # VNI 0 is not a VNI


def test_isolation_rules_keep_169_254_169_254_on_the_node() -> None:
    rules = isolation_rules("cmt-42")
    assert rules.startswith("*filter\n")
    assert "-A FORWARD -p ARP -o ! cmt-42mp+ --arp-ip-dst 169.254.169.254 -j DROP" in rules
    assert "-A FORWARD -p ARP -i ! cmt-42mp+ --arp-ip-src 169.254.169.254 -j DROP" in rules
    assert "-A FORWARD -p IPv4 -o ! cmt-42mp+ --ip-dst 169.254.169.254 -j DROP" in rules
    assert f"-A FORWARD -s {LOCALPORT_MAC} -o ! cmt-42tap+ -j DROP" in rules


def test_summarize_finds_the_failover_time_late_failures_and_wrong_documents() -> None:
    outputs = {
        "a": "99.0 ok A\n100.5 err URLError\n101.0 err timeout\n102.0 ok A\n",
        "b": "100.2 ok B\n106.5 err URLError\n107.0 ok A\n",
        "c": "junk line\n",
    }
    result = summarize("network-1", 100.0, outputs, {"a": "A", "b": "B", "c": "C"}, bound=5.0)
    assert result.requests == {"a": 3, "b": 3, "c": 0}
    assert result.failures == 3
    assert result.failover_seconds == 6.5
    assert result.late == ["b at +6.5 s: URLError"]
    assert result.wrong == 1  # b got a's document
    assert result.reasons == {"URLError": 2, "timeout": 1}
