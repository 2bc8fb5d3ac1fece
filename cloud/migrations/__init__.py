"""Alembic migrations of the state store; `cloud.state.db.migrate` runs them at start-up."""
