"""The lockers domain's tables: orders, their transitions, the compartment mirror, commands,
alarms and shopper notifications (`cloud.lockers.tables`).

Created from that package's table definitions (checkfirst); a later change of one of them
gets a revision of its own on this branch.

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from cloud.lockers import tables

revision = "0004"
down_revision = "0002"
branch_labels = ("lockers",)
depends_on = None

_TABLES = (
    tables.orders,
    tables.transitions,
    tables.compartments,
    tables.commands,
    tables.alarms,
    tables.notifications,
)


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        table.drop(bind, checkfirst=True)
