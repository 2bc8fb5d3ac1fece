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

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    UniqueConstraint,
)

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
# What the inventory-level webhook last delivered per (store, GTIN) (cloud/inventory/
# webhooks.py): a level is sent when it differs from this row, so nothing depends on every
# change being announced, and a restart resends only what the receiver has not seen.
levels_sent = Table(
    "inventory_levels_sent",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("gtin", GTIN, primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False),
    Column("available", Integer, nullable=False),
    Column("sent_at", TS, nullable=False),
)

# Store operations (revision 0007_storeops): replenishment tasks, sales, departures, book
# stock and approved differences.
EPC = String(124)  # hex, as protocols.ids.Epc allows

# "Move N from the backroom to shelf X" (cloud/inventory/replenish.py). `open_key` is set
# while the task is open and NULL once done: one open task per (store, GTIN), even when an
# ingest batch and an API call race.
replenishment_tasks = Table(
    "replenishment_tasks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),  # replenish
    Column("gtin", GTIN, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("from_zone", ID, nullable=False),
    Column("to_shelf", ID, nullable=False),
    Column("status", String(8), nullable=False),  # open | done
    Column("created_at", TS, nullable=False),
    Column("closed_at", TS, nullable=True),
    Column("closed_by", String(64), nullable=True),  # "rfid" or the key's name
    Column("open_key", String(100), nullable=True),
    UniqueConstraint("open_key", name="uq_replenishment_tasks_open_key"),
)
Index("ix_replenishment_tasks_store_status", replenishment_tasks.c.store_id,
      replenishment_tasks.c.status)  # fmt: skip

# EPCs sold (POS sale feed, collected orders): an item seen at an exit is fine if listed here.
sold_items = Table(
    "sold_items",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("epc", EPC, primary_key=True),
    Column("gtin", GTIN, nullable=True),
    Column("sold_at", TS, nullable=False),
    Column("sale_id", String(64), nullable=False),
    Column("source", String(16), nullable=False),  # pos | order
    Column("price", Numeric(12, 2), nullable=True),
    Column("currency", String(3), nullable=True),
)
Index("ix_sold_items_store_sold_at", sold_items.c.store_id, sold_items.c.sold_at)

# Items that left: through an exit read point, or unseen in the whole store (left_store).
# With the sales they are the demand the reorder suggestions are made from.
item_departures = Table(
    "item_departures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", ID, nullable=False),
    Column("epc", EPC, nullable=False),
    Column("gtin", GTIN, nullable=True),
    Column("at", TS, nullable=False),
    Column("via", String(16), nullable=False),  # exit | left_store
    Column("shelf", ID, nullable=True),  # the exit read point
    Column("sold", Boolean, nullable=False),
)
Index("ix_item_departures_store_at", item_departures.c.store_id, item_departures.c.at)

# Book stock imported from the POS/ERP, per (store, GTIN), with the GTIN's category.
book_stock = Table(
    "book_stock",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("gtin", GTIN, primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("category", String(64), nullable=False),
    Column("imported_at", TS, nullable=False),
    Column("imported_by", String(64), nullable=False),
)

# Differences (RFID count - book) a store approved for posting back to the ERP.
approved_differences = Table(
    "approved_differences",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", ID, nullable=False),
    Column("gtin", GTIN, nullable=False),
    Column("category", String(64), nullable=False),
    Column("rfid_count", Integer, nullable=False),
    Column("book", Integer, nullable=False),
    Column("difference", Integer, nullable=False),
    Column("approved_at", TS, nullable=False),
    Column("approved_by", String(64), nullable=False),
)
Index("ix_approved_differences_store", approved_differences.c.store_id, approved_differences.c.id)

# Floor minimums set through the API (revision 0008_orders): per (store, GTIN) they replace
# the config's `floor_minimums` entry; `shelf` NULL lets the task name the floor shelf that
# holds the most of the GTIN. A minimum of 0 switches a config minimum off for the store.
floor_minimums = Table(
    "floor_minimums",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("gtin", GTIN, primary_key=True),
    Column("minimum", Integer, nullable=False),
    Column("shelf", ID, nullable=True),
    Column("updated_at", TS, nullable=False),
    Column("updated_by", String(64), nullable=False),
)
