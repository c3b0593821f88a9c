"""The scheduling decision on plain data: quotas, least load, failover, the single-host rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloudmeta.scheduler import (
    AGENT_TYPE_DHCP,
    AGENT_TYPE_L3,
    AgentState,
    Move,
    Policy,
    dhcp_device_id,
    is_alive,
    plan,
)


def dhcp(agent_id: str, alive: bool = True, host: str | None = None) -> AgentState:
    return AgentState(agent_id, AGENT_TYPE_DHCP, host or f"h-{agent_id}", alive)


def l3(agent_id: str, alive: bool = True) -> AgentState:
    return AgentState(agent_id, AGENT_TYPE_L3, f"h-{agent_id}", alive)


def test_networks_go_to_the_least_loaded_agents_up_to_the_quota() -> None:
    agents = [dhcp("a"), dhcp("b"), dhcp("c")]
    found = plan(agents, {"n1": {"a"}, "n2": set(), "n3": set()}, {}, Policy(2))
    # n1 keeps a and gains the least loaded of b/c; n2, n3 spread over who has least.
    bound: dict[str, set[str]] = {"n1": {"a"}, "n2": set(), "n3": set()}
    for move in found.moves:
        assert move.source is None and move.kind == "network"
        bound[move.object_id].add(move.target)
    assert all(len(agents_) == 2 for agents_ in bound.values())
    loads = sorted(sum(a in b for b in bound.values()) for a in "abc")
    assert loads == [2, 2, 2]


def test_nothing_to_do_is_an_empty_plan() -> None:
    found = plan([dhcp("a"), l3("r")], {"n1": {"a"}}, {"r1": {"r"}}, Policy())
    assert not found and found.moves == []


def test_a_router_goes_to_one_l3_agent_never_to_a_dhcp_agent() -> None:
    found = plan([dhcp("a"), l3("x"), l3("y")], {}, {"r1": set(), "r2": set()}, Policy(3))
    assert {(m.object_id, m.target) for m in found.moves} == {("r1", "x"), ("r2", "y")}


def test_a_dead_agents_work_moves_to_a_live_one() -> None:
    agents = [dhcp("a", alive=False), dhcp("b"), l3("x", alive=False), l3("y")]
    found = plan(agents, {"n1": {"a"}}, {"r1": {"x"}}, Policy())
    assert found.moves == [Move("network", "n1", "a", "b"), Move("router", "r1", "x", "y")]
    assert found.agents() == {"a", "b", "x", "y"}


def test_failover_off_keeps_work_on_the_dead_agent() -> None:
    agents = [dhcp("a", alive=False), dhcp("b"), l3("x", alive=False), l3("y")]
    found = plan(agents, {"n1": {"a"}}, {"r1": {"x"}}, Policy(1, False, False))
    assert not found


def test_with_no_live_agent_to_take_it_the_work_stays() -> None:
    agents = [dhcp("a", alive=False), dhcp("b", alive=False)]
    assert not plan(agents, {"n1": {"a"}}, {}, Policy())


def test_two_agents_per_network_replace_only_the_dead_one() -> None:
    agents = [dhcp("a", alive=False), dhcp("b"), dhcp("c")]
    found = plan(agents, {"n1": {"a", "b"}}, {}, Policy(2))
    assert found.moves == [Move("network", "n1", "a", "c")]


def test_the_only_agent_of_its_type_gets_everything_even_if_late() -> None:
    """All-in-one: one DHCP agent whose heartbeat is overdue still gets new networks."""
    found = plan([dhcp("a", alive=False)], {"n1": set()}, {}, Policy())
    assert found.moves == [Move("network", "n1", None, "a")]
    found = plan([dhcp("a", alive=False), dhcp("b", alive=False)], {"n1": set()}, {}, Policy())
    assert not found  # two dead agents: wait for one to come back


def test_bindings_of_unknown_agents_are_ignored() -> None:
    found = plan([dhcp("a")], {"n1": {"gone"}}, {}, Policy())
    assert found.moves == [Move("network", "n1", None, "a")]


def test_ties_are_broken_by_host_so_every_api_host_plans_alike() -> None:
    agents = [dhcp("z", host="h2"), dhcp("y", host="h1")]
    assert plan(agents, {"n1": set()}, {}, Policy()).moves[0].target == "y"
    assert plan(list(reversed(agents)), {"n1": set()}, {}, Policy()).moves[0].target == "y"


def test_liveness_and_device_ids() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC)
    assert is_alive(now - timedelta(seconds=75), now, 75)
    assert not is_alive(now - timedelta(seconds=75.1), now, 75)
    one, two = dhcp_device_id("net", "host-1"), dhcp_device_id("net", "host-2")
    assert one != two and one.startswith("dhcp") and one.endswith("-net")
    assert one == dhcp_device_id("net", "host-1")
    assert dhcp_device_id("net") == "dhcp-net"  # no host: the one agent of older releases
