"""The lockers domain's tables (created by alembic revision 0004, `cloud/migrations`).

- `locker_orders`: one row per BOPIS order, with its current state and where it is;
- `locker_order_transitions`: every state change of an order, timestamped (the audit trail
  and the source of the KPIs);
- `locker_compartments`: the live mirror of every compartment the edges report;
- `locker_commands`: the edge commands the domain sent and how the edge answered;
- `locker_alarms`: door and code alarms (forced_open, door_ajar, code_burst_alarm);
- `locker_notifications`: shopper notifications and their delivery attempts.

The pickup code itself is never stored, nor anything it could be recovered from without
the bank's key: `code_hash` holds `protocols.pickup.key_check` (a keyed MAC of the grant,
used to notice a key that changed since assignment; the column keeps its old name, and
rows from before hold a scrypt hash of the code, still accepted).
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from cloud.state.schema import ID, TS, metadata

orders = Table(
    "locker_orders",
    metadata,
    # `seq` is the order's number: the `order_seq` the pickup code is derived from.
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("order_id", ID, nullable=False, unique=True),
    Column("store_id", ID, nullable=False),
    Column("state", String(24), nullable=False),
    Column("shopper", ID, nullable=True),  # the shopper app's inbox, if given
    Column("items", JSON, nullable=False),
    Column("node_id", ID, nullable=True),
    Column("bank", ID, nullable=True),
    Column("compartment", ID, nullable=True),
    Column("hold_until", TS, nullable=True),
    Column("code_hash", String(64), nullable=True),  # key_check, see the docstring
    Column("code_issued_at", TS, nullable=True),
    Column("reason", Text, nullable=True),  # why it is in `exception` (or was refused)
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index("ix_locker_orders_where", orders.c.store_id, orders.c.bank, orders.c.compartment)

transitions = Table(
    "locker_order_transitions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", ID, nullable=False, index=True),
    Column("store_id", ID, nullable=False),
    Column("from_state", String(24), nullable=True),
    Column("to_state", String(24), nullable=False),
    Column("cause", String(64), nullable=False),
    Column("at", TS, nullable=False),
)
Index("ix_locker_transitions_store_at", transitions.c.store_id, transitions.c.at)

compartments = Table(
    "locker_compartments",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("bank", ID, primary_key=True),
    Column("compartment", ID, primary_key=True),
    Column("node_id", ID, nullable=False),
    Column("state", String(24), nullable=False),
    Column("door_open", Boolean, nullable=False),
    Column("occupied", Boolean, nullable=False),
    Column("flags", JSON, nullable=False),
    Column("order_ref", String(64), nullable=True),
    Column("updated_at", TS, nullable=False),
)

commands = Table(
    "locker_commands",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("correlation_id", String(64), nullable=False, unique=True),
    Column("order_id", ID, nullable=True),
    Column("store_id", ID, nullable=False),
    Column("node_id", ID, nullable=False),
    Column("bank", ID, nullable=False),
    Column("compartment", ID, nullable=False),
    Column("name", ID, nullable=False),
    Column("status", String(16), nullable=False),  # sent, accepted, done, failed, rejected
    Column("reason", Text, nullable=True),
    Column("sent_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

alarms = Table(
    "locker_alarms",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", ID, nullable=False),
    Column("bank", ID, nullable=False),
    Column("compartment", ID, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("order_id", ID, nullable=True),
    Column("at", TS, nullable=False),
)
Index("ix_locker_alarms_store_at", alarms.c.store_id, alarms.c.at)

notifications = Table(
    "locker_notifications",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", ID, nullable=False, index=True),
    Column("store_id", ID, nullable=False),
    Column("channel", String(16), nullable=False),  # webhook, mqtt
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending, delivered, failed, dropped
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("next_at", TS, nullable=False),  # when the next attempt is due
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# ---------------------------------------------------------------- orders (revision 0007_orders)
# What the online channel said about an order (docs/orders.md): one row per order placed
# through `POST /api/v1/orders` or the order webhook. Orders from the older
# `POST /api/v1/stores/{store}/orders` have none: they are locker orders, reserved when the
# domain reserves stock.
order_intake = Table(
    "order_intake",
    metadata,
    Column("order_id", ID, primary_key=True),
    Column("external_id", String(128), nullable=True, unique=True),
    Column("request_hash", String(64), nullable=False),  # sha256 of the canonical request
    Column("source", String(16), nullable=False),  # api, webhook
    Column("method", String(16), nullable=False),  # locker, counter, curbside
    Column("contact", String(256), nullable=True),  # the shopper's contact token
    Column("promised_at", TS, nullable=True),
    Column("reserved", Boolean, nullable=False),
    Column("arrived_at", TS, nullable=True),  # curbside check-in
    Column("arrival_note", String(200), nullable=True),  # e.g. "bay 3, red car"
)

# Items a shopper brings back: `expected` until RFID reads the EPC in the store, then
# `received` (back in stock) or `damaged` (on hand, not available).
order_returns = Table(
    "order_returns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", ID, nullable=False, index=True),
    Column("store_id", ID, nullable=False),
    Column("epc", String(128), nullable=False),
    Column("gtin", String(14), nullable=True),  # from the read, once read
    Column("method", String(16), nullable=False),  # counter, locker
    Column("bank", ID, nullable=True),
    Column("compartment", ID, nullable=True),
    Column("condition", String(16), nullable=False),  # resellable, damaged
    Column("status", String(16), nullable=False),  # expected, received, damaged
    Column("reason", Text, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("received_at", TS, nullable=True),
)
Index("ix_order_returns_store_epc", order_returns.c.store_id, order_returns.c.epc)

# ------------------------------------------------------------- picks (revision 0008_orders)
# The EPCs staff scanned when they staged an order (`POST /orders/{id}/stage` with `epcs`):
# sold (`sold_items`, source "order") when the order is collected. None for an order staged
# without EPCs: the order's view says so.
order_picks = Table(
    "order_picks",
    metadata,
    Column("order_id", ID, primary_key=True),
    Column("epc", String(128), primary_key=True),
    Column("store_id", ID, nullable=False),
    Column("gtin", String(14), nullable=False),
    Column("picked_at", TS, nullable=False),
    Column("picked_by", String(64), nullable=False),
)
Index("ix_order_picks_store_epc", order_picks.c.store_id, order_picks.c.epc)

# Where RFID last saw each EPC in a store (arrived/moved events; left_store removes it):
# the pick list's "which EPCs on which shelf". `departed_at` (revision 0008_orders): the
# item went off that shelf and is not on another yet (picked, in a basket); picks accept it.
epc_locations = Table(
    "epc_locations",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("epc", String(128), primary_key=True),
    Column("gtin", String(14), nullable=False),
    Column("shelf", ID, nullable=False),
    Column("seen_at", TS, nullable=False),
    Column("departed_at", TS, nullable=True),
)
Index("ix_epc_locations_gtin", epc_locations.c.store_id, epc_locations.c.gtin)

# ---------------------------------------------------------------- returns (revision 0009_returns)
# A return dropped off into a locker compartment (cloud/lockers/returns.py): the compartment
# kept for it, the drop-off grant (`id` is its order_seq, `expires_at` its expiry; only the
# keyed `key_check` is stored, never the code), and how far it got: requested (the edge was
# sent `locker.return`) -> return_pending (acked) -> returned_in_locker (dropped off) ->
# emptied (staff took it out) -> return_completed (its EPCs read back in); or failed,
# expired. `items` ({epc, condition}) are the order_returns rows it carries.
locker_returns = Table(
    "locker_returns",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", ID, nullable=False, index=True),
    Column("store_id", ID, nullable=False),
    Column("node_id", ID, nullable=False),
    Column("bank", ID, nullable=False),
    Column("compartment", ID, nullable=False),
    Column("state", String(24), nullable=False),
    Column("items", JSON, nullable=False),
    Column("key_check", String(64), nullable=False),
    Column("correlation_id", String(64), nullable=True),  # of the locker.return command
    Column("expires_at", TS, nullable=False),
    Column("reason", Text, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("dropped_at", TS, nullable=True),
    Column("emptied_at", TS, nullable=True),
    Column("completed_at", TS, nullable=True),
)
Index(
    "ix_locker_returns_where",
    locker_returns.c.store_id,
    locker_returns.c.bank,
    locker_returns.c.compartment,
)
