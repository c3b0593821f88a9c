"""Change records carry what they touch: a JSON column ``changes.touches``.

With it the metadata agent and the metadata API drop only the cache entries a change can
affect (see ``cloudmeta.inventory.changes``). Rows written before this revision keep NULL,
which readers treat as "could concern anyone".

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("touches", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("changes", schema=None) as batch_op:
        batch_op.drop_column("touches")
