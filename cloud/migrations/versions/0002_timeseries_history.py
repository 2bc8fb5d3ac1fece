"""The time-series package's SQL `history` table (`cloud.timeseries.sql`).

The table is owned by `cloud.timeseries`; this revision creates it from that package's
metadata (checkfirst, so a database where its `create_all` already ran is fine). A later
change of that table gets a revision of its own.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

from cloud.timeseries.sql import timeseries_metadata

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timeseries_metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    timeseries_metadata.drop_all(op.get_bind(), checkfirst=True)
