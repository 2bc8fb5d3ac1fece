"""Locker returns: drop-offs into a compartment (`cloud.lockers.tables.locker_returns`).

Revision ID: 0009_returns
Revises: 0008_orders
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from cloud.lockers import tables

revision = "0009_returns"
down_revision = "0008_orders"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tables.locker_returns.create(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    tables.locker_returns.drop(op.get_bind(), checkfirst=True)
