"""EPCIS domain: the EPCIS events the cloud serves through the EPCIS 2.0 query interface.

Revision ID: 0006_epcis
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_epcis"
down_revision = "0002"
branch_labels = ("epcis",)
depends_on = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)
URI = sa.String(256)
ROW_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "epcis_events",
        sa.Column("id", ROW_ID, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(100), nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("event_time", TS, nullable=False),
        sa.Column("record_time", TS, nullable=False),
        sa.Column("epc", URI, nullable=False),
        sa.Column("biz_step", sa.String(64), nullable=False),
        sa.Column("disposition", sa.String(64), nullable=True),
        sa.Column("read_point", URI, nullable=True),
        sa.Column("biz_location", URI, nullable=True),
        sa.Column("event", sa.JSON, nullable=False),
        sa.UniqueConstraint("event_id", name="uq_epcis_events_event_id"),
    )
    op.create_index("ix_epcis_events_time", "epcis_events", ["event_time", "id"])
    op.create_index("ix_epcis_events_epc", "epcis_events", ["epc", "event_time"])
    op.create_index("ix_epcis_events_store", "epcis_events", ["store_id", "event_time"])
    op.create_index("ix_epcis_events_biz_location", "epcis_events", ["biz_location", "event_time"])
    op.create_index("ix_epcis_events_read_point", "epcis_events", ["read_point", "event_time"])


def downgrade() -> None:
    op.drop_index("ix_epcis_events_read_point", table_name="epcis_events")
    op.drop_index("ix_epcis_events_biz_location", table_name="epcis_events")
    op.drop_index("ix_epcis_events_store", table_name="epcis_events")
    op.drop_index("ix_epcis_events_epc", table_name="epcis_events")
    op.drop_index("ix_epcis_events_time", table_name="epcis_events")
    op.drop_table("epcis_events")
