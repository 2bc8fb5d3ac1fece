"""Ingest shards: the lease of each shard and the replicas that heartbeat (cloud/ingest/leases.py).

Revision ID: 0007_shards
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_shards"
down_revision = "0001"
branch_labels = ("ingest",)
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ingest_shard_leases",
        sa.Column("shard", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("holder", sa.String(128), nullable=True),
        sa.Column("token", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("acquired_at", TS, nullable=True),
        sa.Column("last_commit_at", TS, nullable=True),
    )
    op.create_table(
        "ingest_replicas",
        sa.Column("replica", sa.String(128), primary_key=True),
        sa.Column("heartbeat_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ingest_replicas")
    op.drop_table("ingest_shard_leases")
