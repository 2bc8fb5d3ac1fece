"""Orders: the EPCs picked per order (`order_picks`), when an EPC went off its shelf
(`epc_locations.departed_at`), and floor minimums set through the API (`floor_minimums`,
inventory).

On the lockers branch after 0007_orders; it needs the inventory branch's store operations
(0007_storeops) for the sold EPCs the picks become.

Revision ID: 0008_orders
Revises: 0007_orders
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
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
    # 0007_orders creates epc_locations from today's table, so a new database has it already
    columns = {c["name"] for c in sa.inspect(bind).get_columns("epc_locations")}
    if "departed_at" not in columns:
        op.add_column(
            "epc_locations", sa.Column("departed_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_column("epc_locations", "departed_at")
    for table in reversed(_TABLES):
        table.drop(bind, checkfirst=True)
