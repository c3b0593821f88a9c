"""The scheduling decision as data: agents and bindings in, the moves to make out.

Networks go to ``dhcp_agents_per_network`` DHCP agents, routers to one L3 agent, each to the
least loaded live agent of its type (Neutron's WeightScheduler and LeastRoutersScheduler;
ties broken by host then id, so two API hosts planning the same state plan the same moves).
A binding on a dead agent moves to a live one when failover is allowed and a live agent is
free; with none free it stays, so an agent that comes back finds its work where it left it.

One rule keeps a single host simple: when an agent type has exactly one agent, that agent is a
candidate even while it counts as dead (a late heartbeat on a loaded host must not leave an
all-in-one cloud's new network unserved).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = [
    "AGENT_TYPES",
    "AGENT_TYPE_DHCP",
    "AGENT_TYPE_L3",
    "AGENT_TYPE_METADATA",
    "AgentState",
    "Move",
    "Plan",
    "Policy",
    "dhcp_device_id",
    "is_alive",
    "plan",
]

# Neutron's agent_type strings (neutron_lib.constants.AGENT_TYPE_*).
AGENT_TYPE_DHCP = "DHCP agent"
AGENT_TYPE_L3 = "L3 agent"
AGENT_TYPE_METADATA = "Metadata agent"
AGENT_TYPES = (AGENT_TYPE_DHCP, AGENT_TYPE_L3, AGENT_TYPE_METADATA)

NETWORK = "network"
ROUTER = "router"


def dhcp_device_id(network_id: str, host: str = "") -> str:
    """The ``device_id`` of the DHCP port of ``host``'s agent on a network (Neutron's form:
    ``dhcp<uuid5(DNS, host)>-<network>``), so two agents on one network never share a port;
    without a host ``dhcp-<network>``, the one agent per machine of older releases."""
    if not host:
        return f"dhcp-{network_id}"
    return f"dhcp{uuid.uuid5(uuid.NAMESPACE_DNS, host)}-{network_id}"


def is_alive(heartbeat_at: datetime, now: datetime, agent_down_time: float) -> bool:
    """Alive while the last report is at most ``agent_down_time`` seconds old."""
    return now - heartbeat_at <= timedelta(seconds=agent_down_time)


@dataclass(frozen=True, slots=True)
class AgentState:
    id: str
    agent_type: str
    host: str
    alive: bool


@dataclass(frozen=True, slots=True)
class Policy:
    """neutron-server's scheduling options."""

    dhcp_agents_per_network: int = 1
    dhcp_failover: bool = True
    l3_failover: bool = True


@dataclass(frozen=True, slots=True)
class Move:
    """``kind`` object leaves ``source`` (None: a new binding) for ``target``."""

    kind: str  # "network" (to DHCP agents) or "router" (to an L3 agent)
    object_id: str
    source: str | None
    target: str


@dataclass(frozen=True, slots=True)
class Plan:
    moves: list[Move] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.moves)

    def agents(self) -> set[str]:
        """Every agent whose work changes."""
        return {m.target for m in self.moves} | {m.source for m in self.moves if m.source}


def plan(
    agents: Sequence[AgentState],
    dhcp: Mapping[str, Iterable[str]],
    l3: Mapping[str, Iterable[str]],
    policy: Policy,
) -> Plan:
    """The moves that bring every network and router to its quota of agents.

    ``dhcp`` maps every network id to the ids of the agents it is bound to (empty when
    unbound), ``l3`` every router id likewise.
    """
    moves = _plan_kind(
        NETWORK, agents, AGENT_TYPE_DHCP, dhcp, policy.dhcp_agents_per_network, policy.dhcp_failover
    )
    moves += _plan_kind(ROUTER, agents, AGENT_TYPE_L3, l3, 1, policy.l3_failover)
    return Plan(moves)


def _plan_kind(
    kind: str,
    agents: Sequence[AgentState],
    agent_type: str,
    bindings: Mapping[str, Iterable[str]],
    quota: int,
    failover: bool,
) -> list[Move]:
    typed = {a.id: a for a in agents if a.agent_type == agent_type}
    candidates = [a for a in typed.values() if a.alive]
    if not candidates and len(typed) == 1:
        candidates = list(typed.values())
    load = dict.fromkeys(typed, 0)
    bound_of: dict[str, set[str]] = {}
    for object_id, agent_ids in bindings.items():
        bound_of[object_id] = {a for a in agent_ids if a in typed}
        for agent_id in bound_of[object_id]:
            load[agent_id] += 1
    usable = {a.id for a in candidates}

    def pick(bound: set[str]) -> str | None:
        free = [a for a in candidates if a.id not in bound]
        if not free:
            return None
        best = min(free, key=lambda a: (load[a.id], a.host, a.id))
        return best.id

    moves: list[Move] = []
    for object_id in sorted(bound_of):
        bound = bound_of[object_id]
        if failover:
            for dead in sorted(a for a in bound if a not in usable):
                target = pick(bound)
                if target is None:
                    break
                moves.append(Move(kind, object_id, dead, target))
                bound.discard(dead)
                bound.add(target)
                load[dead] -= 1
                load[target] += 1
        while len(bound) < quota:
            target = pick(bound)
            if target is None:
                break
            moves.append(Move(kind, object_id, None, target))
            bound.add(target)
            load[target] += 1
    return moves
