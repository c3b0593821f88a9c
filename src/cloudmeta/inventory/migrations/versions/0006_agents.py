"""Agents and their bindings: ``agents``, ``network_dhcp_agent_bindings``,
``router_l3_agent_bindings`` (Neutron's agents, networkdhcpagentbindings, routerl3agentbindings).

Existing clouds start with no agent and no binding: each agent registers when it starts and the
admin API then schedules every network and router to it (see cloudmeta.scheduler).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 14:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_type", sa.String(length=255), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("configurations", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("agent_type", "host", name=op.f("uq_agents_agent_type")),
    )
    for table, column, parent in (
        ("network_dhcp_agent_bindings", "network_id", "networks"),
        ("router_l3_agent_bindings", "router_id", "routers"),
    ):
        op.create_table(
            table,
            sa.Column(column, sa.String(length=36), nullable=False),
            sa.Column("agent_id", sa.String(length=36), nullable=False),
            sa.ForeignKeyConstraint(
                [column],
                [f"{parent}.id"],
                name=op.f(f"fk_{table}_{column}_{parent}"),
                ondelete="CASCADE",
            ),
            sa.ForeignKeyConstraint(
                ["agent_id"],
                ["agents.id"],
                name=op.f(f"fk_{table}_agent_id_agents"),
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint(column, "agent_id", name=op.f(f"pk_{table}")),
        )
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(batch_op.f(f"ix_{table}_agent_id"), ["agent_id"], unique=False)


def downgrade() -> None:
    op.drop_table("router_l3_agent_bindings")
    op.drop_table("network_dhcp_agent_bindings")
    op.drop_table("agents")
