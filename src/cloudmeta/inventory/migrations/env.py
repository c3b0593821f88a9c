"""Alembic environment: always run in-process on a connection cloudmeta hands over."""

from __future__ import annotations

from alembic import context

from cloudmeta.inventory.models import Base

_connection = context.config.attributes.get("connection")
if _connection is None:
    raise RuntimeError("run migrations with `cloudmeta db upgrade`, not the alembic command")
context.configure(
    connection=_connection,
    target_metadata=Base.metadata,
    render_as_batch=_connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
