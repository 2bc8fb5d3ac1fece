"""The catalogue's table (on the core metadata; alembic revision 0007_catalogue).

`products`: one row per GTIN-14 with what people read instead of the GTIN: name, size,
colour, price and currency, category. Filled from CSV (`PUT /api/v1/products`,
`storegate catalogue import`); a later import of the same GTIN replaces the row.
"""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, Numeric, String, Table

from cloud.state.schema import metadata

TS = DateTime(timezone=True)

products = Table(
    "products",
    metadata,
    Column("gtin", String(14), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("size", String(40), nullable=True),
    Column("colour", String(40), nullable=True),
    Column("price", Numeric(12, 2), nullable=True),
    Column("currency", String(3), nullable=True),
    Column("category", String(100), nullable=True),
    Column("updated_at", TS, nullable=False),
)
Index("ix_products_name", products.c.name)
