"""Inventory: store operations (replenishment tasks, sold EPCs, departures, book stock and
approved differences).

Revision ID: 0007_storeops
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_storeops"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)
GTIN = sa.String(14)
EPC = sa.String(124)


def upgrade() -> None:
    op.create_table(
        "replenishment_tasks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("gtin", GTIN, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("from_zone", ID, nullable=False),
        sa.Column("to_shelf", ID, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("closed_at", TS, nullable=True),
        sa.Column("closed_by", sa.String(64), nullable=True),
        sa.Column("open_key", sa.String(100), nullable=True),
        sa.UniqueConstraint("open_key", name="uq_replenishment_tasks_open_key"),
    )
    op.create_index(
        "ix_replenishment_tasks_store_status", "replenishment_tasks", ["store_id", "status"]
    )
    op.create_table(
        "sold_items",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("epc", EPC, primary_key=True),
        sa.Column("gtin", GTIN, nullable=True),
        sa.Column("sold_at", TS, nullable=False),
        sa.Column("sale_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("price", sa.Numeric(12, 2), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
    )
    op.create_index("ix_sold_items_store_sold_at", "sold_items", ["store_id", "sold_at"])
    op.create_table(
        "item_departures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("epc", EPC, nullable=False),
        sa.Column("gtin", GTIN, nullable=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("shelf", ID, nullable=True),
        sa.Column("sold", sa.Boolean, nullable=False),
    )
    op.create_index("ix_item_departures_store_at", "item_departures", ["store_id", "at"])
    op.create_table(
        "book_stock",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("gtin", GTIN, primary_key=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("imported_at", TS, nullable=False),
        sa.Column("imported_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "approved_differences",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("gtin", GTIN, nullable=False),
        sa.Column("category", sa.String(64), nullable=False),
        sa.Column("rfid_count", sa.Integer, nullable=False),
        sa.Column("book", sa.Integer, nullable=False),
        sa.Column("difference", sa.Integer, nullable=False),
        sa.Column("approved_at", TS, nullable=False),
        sa.Column("approved_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_approved_differences_store", "approved_differences", ["store_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_approved_differences_store", table_name="approved_differences")
    op.drop_table("approved_differences")
    op.drop_table("book_stock")
    op.drop_index("ix_item_departures_store_at", table_name="item_departures")
    op.drop_table("item_departures")
    op.drop_index("ix_sold_items_store_sold_at", table_name="sold_items")
    op.drop_table("sold_items")
    op.drop_index("ix_replenishment_tasks_store_status", table_name="replenishment_tasks")
    op.drop_table("replenishment_tasks")
