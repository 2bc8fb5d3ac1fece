"""Table definitions (SQLAlchemy Core). Alembic migrations in `cloud/migrations` create them.

Stream positions and dedup marks: per (store, node, stream) a high-water mark `hw` (every
seq <= hw has been ingested or given up on) plus a bounded window of marks for seqs above
`hw` that arrived early (after a gap). A seq at or below `hw`, or already marked, is a
duplicate. When the gap fills the marks fold into `hw`; when more than the window's worth
of marks pile up the gap is given up on (a resync already rebuilt the live state) and `hw`
jumps. So the table holds at most `dedup_window` rows per stream, not one row per message.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

ID = String(64)
TS = DateTime(timezone=True)

stores = Table(
    "stores",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("created_at", TS, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("node_id", ID, primary_key=True),
    Column("status", String(16), nullable=False, default="unknown"),
    Column("bd_seq", BigInteger, nullable=True),
    Column("version", String(64), nullable=True),
    Column("devices", JSON, nullable=True),
    Column("last_birth_at", TS, nullable=True),
    Column("health", JSON, nullable=True),
    Column("health_at", TS, nullable=True),
    Column("last_seen", TS, nullable=True),
    ForeignKeyConstraint(["store_id"], ["stores.store_id"], ondelete="CASCADE"),
)

stream_positions = Table(
    "stream_positions",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("node_id", ID, primary_key=True),
    Column("stream", String(140), primary_key=True),
    Column("hw", BigInteger, nullable=True),
    Column("birth_seq", BigInteger, nullable=True),
    Column("updated_at", TS, nullable=False),
)

dedup_marks = Table(
    "dedup_marks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("store_id", ID, nullable=False),
    Column("node_id", ID, nullable=False),
    Column("stream", String(140), nullable=False),
    Column("seq", BigInteger, nullable=False),
    UniqueConstraint("store_id", "node_id", "stream", "seq", name="uq_dedup_marks_stream_seq"),
)

inventory = Table(
    "inventory",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("shelf", ID, primary_key=True),
    Column("gtin", String(14), primary_key=True),
    Column("node_id", ID, nullable=False),
    Column("count", Integer, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index("ix_inventory_gtin", inventory.c.gtin)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(512), nullable=False),
    Column("payload_excerpt", Text, nullable=False),
    Column("payload_bytes", Integer, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", Text, nullable=False),
    Column("store_id", ID, nullable=True),
    Column("received_at", TS, nullable=False),
)

commands = Table(
    "commands",
    metadata,
    Column("correlation_id", String(64), primary_key=True),
    Column("store_id", ID, nullable=False),
    Column("node_id", ID, nullable=False),
    Column("name", ID, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("args", JSON, nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("sent_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)
Index("ix_commands_node_name", commands.c.store_id, commands.c.node_id, commands.c.name)
