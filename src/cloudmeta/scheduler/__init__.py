"""Which agent serves what: pure functions over agents, bindings and liveness (no I/O).

The admin API applies :func:`plan` inside one store transaction (:mod:`cloudmeta.inventory.agents`);
the agents only read the outcome.
"""

from cloudmeta.scheduler.plan import (
    AGENT_TYPE_DHCP,
    AGENT_TYPE_L3,
    AGENT_TYPE_METADATA,
    AGENT_TYPES,
    AgentState,
    Move,
    Plan,
    Policy,
    dhcp_device_id,
    is_alive,
    plan,
)

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
