"""Alembic environment: runs on the connection `cloud.state.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

from cloud.state.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run migrations through cloud.state.db.migrate (it passes the connection);"
        " the alembic CLI is not wired up"
    )
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
