"""Inventory domain: reorder points, planograms, low-stock and misplaced-item alerts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = ("inventory",)
depends_on = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)
GTIN = sa.String(14)


def upgrade() -> None:
    op.create_table(
        "reorder_points",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("gtin", GTIN, primary_key=True),
        sa.Column("shelf", ID, primary_key=True),
        sa.Column("reorder_point", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "planograms",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("shelf", ID, primary_key=True),
        sa.Column("gtins", sa.JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(64), nullable=False),
    )
    op.create_table(
        "inventory_alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("shelf", ID, nullable=True),
        sa.Column("gtin", GTIN, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("threshold", sa.Integer, nullable=True),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("cleared_at", TS, nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("acknowledged_at", TS, nullable=True),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
        sa.Column("open_key", sa.String(220), nullable=True),
        sa.UniqueConstraint("open_key", name="uq_inventory_alerts_open_key"),
    )
    op.create_index("ix_inventory_alerts_store_state", "inventory_alerts", ["store_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_inventory_alerts_store_state", table_name="inventory_alerts")
    op.drop_table("inventory_alerts")
    op.drop_table("planograms")
    op.drop_table("reorder_points")
