"""Subnets carry Neutron's ``ipv6_ra_mode`` beside ``ipv6_address_mode``: ``subnets.ipv6_ra_mode``.

``ipv6_ra_mode`` says that the cloud itself sends the router advertisements of an IPv6 subnet
(``slaac``, ``dhcpv6-stateful``, ``dhcpv6-stateless``); unset, some router outside does, or
nobody. Existing subnets keep it unset, which is what they meant before the column existed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 18:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ipv6_ra_mode", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subnets", schema=None) as batch_op:
        batch_op.drop_column("ipv6_ra_mode")
