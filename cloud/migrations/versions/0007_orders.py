"""Orders from the online channel: intake (external id, pickup method, contact, promised
time, curbside check-in), returns, and where RFID last saw each EPC (pick lists)
(`cloud.lockers.tables`).

On the lockers branch; it needs the inventory branch's reservations (0006).

Revision ID: 0007_orders
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from cloud.lockers import tables

revision = "0007_orders"
down_revision = "0004"
branch_labels = None
depends_on = ("0006",)

_TABLES = (tables.order_intake, tables.order_returns, tables.epc_locations)


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        table.drop(bind, checkfirst=True)
