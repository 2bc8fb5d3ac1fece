"""Orders: the EPCs picked per order (`order_picks`), and floor minimums set through the
API (`floor_minimums`, inventory).

On the lockers branch after 0007_orders; it needs the inventory branch's store operations
(0007_storeops) for the sold EPCs the picks become.

Revision ID: 0008_orders
Revises: 0007_orders
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

from cloud.inventory import tables as inventory_tables
from cloud.lockers import tables

revision = "0008_orders"
down_revision = "0007_orders"
branch_labels = None
depends_on = ("0007_storeops",)

_TABLES = (tables.order_picks, inventory_tables.floor_minimums)


def upgrade() -> None:
    bind = op.get_bind()
    for table in _TABLES:
        table.create(bind, checkfirst=True)


def downgrade() -> None:
    bind = op.get_bind()
    for table in reversed(_TABLES):
        table.drop(bind, checkfirst=True)
