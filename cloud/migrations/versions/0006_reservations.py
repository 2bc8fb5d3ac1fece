"""Inventory: stock reserved by open online orders (available = on hand - reserved - safety).

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)
GTIN = sa.String(14)


def upgrade() -> None:
    op.create_table(
        "stock_reservations",
        sa.Column("order_id", ID, primary_key=True),
        sa.Column("gtin", GTIN, primary_key=True),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_table(
        "reserved_stock",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("gtin", GTIN, primary_key=True),
        sa.Column("reserved", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("reserved_stock")
    op.drop_table("stock_reservations")
