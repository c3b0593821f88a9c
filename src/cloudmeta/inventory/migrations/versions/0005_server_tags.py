"""Servers carry AWS's ``instance_metadata_tags`` option: ``servers.instance_metadata_tags``.

Tags themselves are in ``server_tags`` since 0001; this column says whether the instance may
read them in its EC2 tree (``meta-data/tags/instance``). Existing servers keep it off, as AWS
does for instances launched without the option.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "instance_metadata_tags", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("servers", schema=None) as batch_op:
        batch_op.drop_column("instance_metadata_tags")
