"""Servers say whether they asked for a config drive: ``servers.config_drive``.

Nova keeps the same flag on the instance (``instances.config_drive``); the compute side builds
the drive when it is set or ``force_config_drive`` is on. Existing servers did not ask for one.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("config_drive", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.drop_column("config_drive")
