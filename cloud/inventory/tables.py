"""The inventory domain's tables (on the core metadata; alembic revisions 0003, 0006).

- `reorder_points`: per (store, GTIN) the on-hand level at or below which the store runs
  low; `shelf` is "" for the store-wide point (sum over shelves) or a shelf id for a
  per-shelf point. Set through the API; config defaults are not stored here.
- `planograms`: per (store, shelf) the GTINs that belong there. A shelf without a row is
  not planned (never checked); a row with an empty list means nothing belongs there.
- `inventory_alerts`: low-stock and misplaced-item alerts. `open_key` is set while the
  alert is raised and NULL once cleared; its unique constraint keeps one open alert per
  (type, store, shelf, gtin) even when the ingestor and an API call race.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table, UniqueConstraint

from cloud.state.schema import metadata

ID = String(64)
TS = DateTime(timezone=True)
GTIN = String(14)

reorder_points = Table(
    "reorder_points",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("gtin", GTIN, primary_key=True),
    Column("shelf", ID, primary_key=True),  # "" = the whole store
    Column("reorder_point", Integer, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

planograms = Table(
    "planograms",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("shelf", ID, primary_key=True),
    Column("gtins", JSON, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("updated_by", String(64), nullable=False),
)

inventory_alerts = Table(
    "inventory_alerts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("type", String(16), nullable=False),  # low_stock | misplaced
    Column("store_id", ID, nullable=False),
    Column("shelf", ID, nullable=True),  # NULL: a store-wide low-stock alert
    Column("gtin", GTIN, nullable=False),
    Column("state", String(16), nullable=False),  # raised | cleared
    Column("count", Integer, nullable=False),  # on hand when last evaluated
    Column("threshold", Integer, nullable=True),  # the reorder point (low_stock)
    Column("raised_at", TS, nullable=False),
    Column("cleared_at", TS, nullable=True),
    Column("details", JSON, nullable=False),
    Column("acknowledged_at", TS, nullable=True),
    Column("acknowledged_by", String(64), nullable=True),
    Column("open_key", String(220), nullable=True),
    UniqueConstraint("open_key", name="uq_inventory_alerts_open_key"),
)
Index("ix_inventory_alerts_store_state", inventory_alerts.c.store_id, inventory_alerts.c.state)

# Open online orders' claims on the shelves (cloud/inventory/stock.py; revision 0006): one
# row per (order, GTIN) while the order's goods are still on the shelves ...
stock_reservations = Table(
    "stock_reservations",
    metadata,
    Column("order_id", ID, primary_key=True),
    Column("gtin", GTIN, primary_key=True),
    Column("store_id", ID, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("at", TS, nullable=False),
)
# ... and their sum per (store, GTIN), whose row is also the lock that serialises orders for
# the same GTIN in the same store.
reserved_stock = Table(
    "reserved_stock",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("gtin", GTIN, primary_key=True),
    Column("reserved", Integer, nullable=False),
)
