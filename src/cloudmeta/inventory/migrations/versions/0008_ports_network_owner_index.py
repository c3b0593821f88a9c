"""Ports by (network_id, device_owner): ``ix_ports_network_id_device_owner``.

Every ``meta_data.json`` the metadata API builds (a cache miss: first request, expiry, a
change) asks for the DHCP ports of the instance's networks (Nova's ``dhcp_server``), and the
DHCP agent and the admin API ask for a network's router interfaces. With one index on
``network_id`` and another on ``device_owner``, SQLite (no statistics) walked every port of
the network: 28 ms at 100 000 ports, against 0.05 ms with this index, and that wait was the
p99 of ``meta_data.json`` at 100 000 ports (bench/README.md, "Scale"). The composite index
replaces ``ix_ports_network_id`` (its leading column serves the same lookups).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 21:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ports_network_id_device_owner", ["network_id", "device_owner"], unique=False
        )
        batch_op.drop_index("ix_ports_network_id")


def downgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index("ix_ports_network_id", ["network_id"], unique=False)
        batch_op.drop_index("ix_ports_network_id_device_owner")
