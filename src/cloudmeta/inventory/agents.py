"""Agents in the store: registration, heartbeats, and the scheduling transaction.

The decision is :func:`cloudmeta.scheduler.plan` (pure); here it is made and applied in one
write transaction. On PostgreSQL the transaction takes an advisory lock first (besides the
store's revision row lock, which every write takes), so two API hosts scheduling at once run
one after the other and the second plans on the first one's outcome; SQLite's write lock
serialises them by itself. Each agent whose work changes gets a change record of kind
``agent`` (the agents follow the feed and reread their own record); the metadata API's caches
ignore that kind.

A DHCP port belongs to its agent through its ``device_id`` (:func:`dhcp_device_id`). When a
network gains an agent that has no port there, the agent takes over a port no bound agent
owns (the dead agent's it replaces, or one of an older release): the address instances
already route 169.254.169.254 to stays in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloudmeta.config import Config
from cloudmeta.inventory import queries
from cloudmeta.inventory.changes import port_touches, touches
from cloudmeta.inventory.errors import Invalid, NotFound
from cloudmeta.inventory.models import (
    DEVICE_OWNER_DHCP,
    Agent,
    Network,
    NetworkDhcpAgentBinding,
    Port,
    Router,
    RouterL3AgentBinding,
    utcnow,
)
from cloudmeta.inventory.specs import AgentReport
from cloudmeta.inventory.store import Tx
from cloudmeta.inventory.views import utc
from cloudmeta.logs import get_logger
from cloudmeta.scheduler import AgentState, Plan, Policy, dhcp_device_id, is_alive, plan

__all__ = [
    "Scheduling",
    "agent_views",
    "delete_agent",
    "heartbeat",
    "pending_plan",
    "register",
    "schedule",
]

_log = get_logger("inventory")
_SCHEDULER_LOCK = 0x636D7363  # pg advisory lock key: "cmsc"


@dataclass(frozen=True, slots=True)
class Scheduling:
    """The admin API's scheduling options (from :class:`Config`)."""

    policy: Policy
    agent_down_time: float

    @classmethod
    def from_config(cls, config: Config) -> Scheduling:
        return cls(
            Policy(
                config.dhcp_agents_per_network,
                config.allow_automatic_dhcp_failover,
                config.allow_automatic_l3agent_failover,
            ),
            config.agent_down_time,
        )


@dataclass(frozen=True, slots=True)
class _State:
    agents: list[Agent]
    dhcp: dict[str, set[str]]
    l3: dict[str, set[str]]

    def states(self, now: datetime, down_time: float) -> list[AgentState]:
        return [
            AgentState(a.id, a.agent_type, a.host, is_alive(utc(a.heartbeat_at), now, down_time))
            for a in self.agents
        ]


async def _load(session: AsyncSession) -> _State:
    agents = list((await session.scalars(select(Agent).order_by(Agent.host, Agent.id))).all())
    dhcp: dict[str, set[str]] = {n: set() for n in await session.scalars(select(Network.id))}
    for network_id, agent_id in await session.execute(
        select(NetworkDhcpAgentBinding.network_id, NetworkDhcpAgentBinding.agent_id)
    ):
        dhcp.setdefault(network_id, set()).add(agent_id)
    l3: dict[str, set[str]] = {r: set() for r in await session.scalars(select(Router.id))}
    for router_id, agent_id in await session.execute(
        select(RouterL3AgentBinding.router_id, RouterL3AgentBinding.agent_id)
    ):
        l3.setdefault(router_id, set()).add(agent_id)
    return _State(agents, dhcp, l3)


async def pending_plan(session: AsyncSession, scheduling: Scheduling) -> Plan:
    """What scheduling would change now (a read: a heartbeat asks before it writes)."""
    state = await _load(session)
    return plan(
        state.states(utcnow(), scheduling.agent_down_time), state.dhcp, state.l3, scheduling.policy
    )


async def schedule(tx: Tx, scheduling: Scheduling) -> Plan:
    """Plan under the scheduler's lock and apply the moves in this transaction."""
    session = tx.session
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEDULER_LOCK})
    await session.flush()
    state = await _load(session)
    found = plan(
        state.states(utcnow(), scheduling.agent_down_time), state.dhcp, state.l3, scheduling.policy
    )
    if not found:
        return found
    hosts = {a.id: a.host for a in state.agents}
    networks: dict[str, set[str]] = {}
    routers: dict[str, set[str]] = {}
    for move in found.moves:
        if move.kind == "network":
            binding: Any = NetworkDhcpAgentBinding
            column, bound, touched = binding.network_id, state.dhcp, networks
        else:
            binding = RouterL3AgentBinding
            column, bound, touched = binding.router_id, state.l3, routers
        if move.source is not None:
            await session.execute(
                delete(binding).where(column == move.object_id, binding.agent_id == move.source)
            )
            bound[move.object_id].discard(move.source)
        session.add(binding(**{column.key: move.object_id, "agent_id": move.target}))
        bound[move.object_id].add(move.target)
        await session.flush()
        for agent_id in (move.source, move.target):
            if agent_id is not None:
                touched.setdefault(agent_id, set()).add(move.object_id)
    for network_id in sorted({m.object_id for m in found.moves if m.kind == "network"}):
        await _hand_over_ports(tx, network_id, [hosts[a] for a in sorted(state.dhcp[network_id])])
    for agent_id in sorted(found.agents()):
        tx.record(
            "agent",
            agent_id,
            "update",
            touches(
                network_ids=sorted(networks.get(agent_id, ())),
                router_ids=sorted(routers.get(agent_id, ())),
            ),
        )
    return found


async def _hand_over_ports(tx: Tx, network_id: str, hosts: list[str]) -> None:
    """Give each bound agent without a DHCP port one that no bound agent owns, if any."""
    ports = (
        await tx.session.scalars(
            select(Port)
            .where(Port.network_id == network_id, Port.device_owner == DEVICE_OWNER_DHCP)
            .options(*queries.port_options())
            .order_by(Port.created_at, Port.id)
        )
    ).all()
    wanted = {dhcp_device_id(network_id, host) for host in hosts}
    orphans = [p for p in ports if p.device_id not in wanted]
    owned = {p.device_id for p in ports}
    for device_id in sorted(wanted - owned):
        if not orphans:
            return
        port = orphans.pop(0)
        old = port.device_id
        await tx.session.execute(update(Port).where(Port.id == port.id).values(device_id=device_id))
        tx.record(
            "port", port.id, "update", port_touches(port) | touches(device_ids=[old, device_id])
        )


async def register(tx: Tx, report: AgentReport, scheduling: Scheduling) -> Agent:
    """Create or refresh the agent (agent_type, host) and schedule with it counted in."""
    if report.agent_type is None or report.host is None:
        raise Invalid("agent: agent_type and host are required to register")
    now = utcnow()
    agent = await tx.session.scalar(
        select(Agent).where(Agent.agent_type == report.agent_type, Agent.host == report.host)
    )
    op = "update"
    if agent is None:
        agent = Agent(agent_type=report.agent_type, host=report.host, created_at=now)
        tx.session.add(agent)
        op = "create"
    agent.configurations = dict(report.configurations)
    agent.started_at = now
    agent.heartbeat_at = now
    await tx.session.flush()
    tx.record("agent", agent.id, op, {})
    await schedule(tx, scheduling)
    return agent


async def heartbeat(session: AsyncSession, agent_id: str, report: AgentReport) -> None:
    """Note that the agent is alive (no revision: nobody follows heartbeats)."""
    values: dict[str, Any] = {"heartbeat_at": utcnow()}
    if report.configurations:
        values["configurations"] = dict(report.configurations)
    result = await session.execute(update(Agent).where(Agent.id == agent_id).values(**values))
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound(f"agent_id: no agent with id {agent_id!r}; register again (POST)")


async def delete_agent(tx: Tx, agent_id: str, scheduling: Scheduling) -> None:
    """Forget an agent (its bindings go with it) and schedule its work elsewhere."""
    agent = await queries.get(tx.session, Agent, agent_id)
    await tx.session.delete(agent)
    await tx.session.flush()
    tx.record("agent", agent_id, "delete", {})
    await schedule(tx, scheduling)


async def agent_views(
    session: AsyncSession, down_time: float, agent_id: str | None = None
) -> list[dict[str, Any]]:
    """Agents as the admin API's JSON: ``alive`` and the networks and routers each hosts."""
    state = await _load(session)
    now = utcnow()
    views = []
    for agent in state.agents:
        if agent_id is not None and agent.id != agent_id:
            continue
        views.append(
            {
                "id": agent.id,
                "agent_type": agent.agent_type,
                "host": agent.host,
                "alive": is_alive(utc(agent.heartbeat_at), now, down_time),
                "configurations": agent.configurations,
                "created_at": utc(agent.created_at).isoformat(),
                "started_at": utc(agent.started_at).isoformat(),
                "heartbeat_at": utc(agent.heartbeat_at).isoformat(),
                "networks": sorted(n for n, a in state.dhcp.items() if agent.id in a),
                "routers": sorted(r for r, a in state.l3.items() if agent.id in a),
            }
        )
    if agent_id is not None and not views:
        raise NotFound(f"agent_id: no agent with id {agent_id!r}")
    return views
