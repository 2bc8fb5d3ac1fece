"""Initial state store: stores, nodes, stream positions, dedup marks, inventory, dead letters,
commands.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stores",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "nodes",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("node_id", ID, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("bd_seq", sa.BigInteger, nullable=True),
        sa.Column("version", sa.String(64), nullable=True),
        sa.Column("devices", sa.JSON, nullable=True),
        sa.Column("last_birth_at", TS, nullable=True),
        sa.Column("health", sa.JSON, nullable=True),
        sa.Column("health_at", TS, nullable=True),
        sa.Column("last_seen", TS, nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["stores.store_id"], ondelete="CASCADE"),
    )
    op.create_table(
        "stream_positions",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("node_id", ID, primary_key=True),
        sa.Column("stream", sa.String(140), primary_key=True),
        sa.Column("hw", sa.BigInteger, nullable=True),
        sa.Column("birth_seq", sa.BigInteger, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "dedup_marks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("node_id", ID, nullable=False),
        sa.Column("stream", sa.String(140), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.UniqueConstraint(
            "store_id", "node_id", "stream", "seq", name="uq_dedup_marks_stream_seq"
        ),
    )
    op.create_table(
        "inventory",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("shelf", ID, primary_key=True),
        sa.Column("gtin", sa.String(14), primary_key=True),
        sa.Column("node_id", ID, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_inventory_gtin", "inventory", ["gtin"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("topic", sa.String(512), nullable=False),
        sa.Column("payload_excerpt", sa.Text, nullable=False),
        sa.Column("payload_bytes", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("store_id", ID, nullable=True),
        sa.Column("received_at", TS, nullable=False),
    )
    op.create_table(
        "commands",
        sa.Column("correlation_id", sa.String(64), primary_key=True),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("node_id", ID, nullable=False),
        sa.Column("name", ID, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("sent_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_commands_node_name", "commands", ["store_id", "node_id", "name"])


def downgrade() -> None:
    for table in (
        "commands",
        "dead_letters",
        "inventory",
        "dedup_marks",
        "stream_positions",
        "nodes",
        "stores",
    ):
        op.drop_table(table)
