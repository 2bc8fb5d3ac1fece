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
