"""Indexes for the agents' lookups: fixed IPs by (ip_address, network_id), ports by device_owner.

The metadata agent asks ``GET /v1/ports?ip_address=&network_id=`` for every request it cannot
answer from its cache. With only ``ix_fixed_ips_ip_address`` and ``ix_ports_network_id``,
SQLite chose the network index and filtered every port of the network (a scan at 100 000
ports); the composite index answers the lookup from ``fixed_ips`` alone and replaces the
single-column one (its leading column). ``device_owner`` filters (``network:dhcp``,
``network:router_interface``) get their own index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fixed_ips", schema=None) as batch_op:
        batch_op.drop_index("ix_fixed_ips_ip_address")
        batch_op.create_index(
            "ix_fixed_ips_ip_address_network_id", ["ip_address", "network_id"], unique=False
        )
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.create_index("ix_ports_device_owner", ["device_owner"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_index("ix_ports_device_owner")
    with op.batch_alter_table("fixed_ips", schema=None) as batch_op:
        batch_op.drop_index("ix_fixed_ips_ip_address_network_id")
        batch_op.create_index("ix_fixed_ips_ip_address", ["ip_address"], unique=False)
