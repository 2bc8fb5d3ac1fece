"""Catalogue domain: the product table (name, size, colour, price per GTIN).

Revision ID: 0007_catalogue
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_catalogue"
down_revision = "0002"
branch_labels = ("catalogue",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "products",
        sa.Column("gtin", sa.String(14), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("size", sa.String(40), nullable=True),
        sa.Column("colour", sa.String(40), nullable=True),
        sa.Column("price", sa.Numeric(12, 2), nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_products_name", "products", ["name"])


def downgrade() -> None:
    op.drop_index("ix_products_name", table_name="products")
    op.drop_table("products")
