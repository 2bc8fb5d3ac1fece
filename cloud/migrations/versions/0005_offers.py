"""Offers: shoppers, rotating tokens, campaigns, offer decisions, arbitrated presence.

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = ("offers",)
depends_on = None

ID = sa.String(64)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "offer_shoppers",
        sa.Column("shopper_id", ID, primary_key=True),
        sa.Column("segment", ID, nullable=True),
        sa.Column("consent", sa.Boolean, nullable=False),
        sa.Column("consent_at", TS, nullable=True),
        sa.Column("withdrawn_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "offer_shopper_tokens",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("token", ID, nullable=False),
        sa.Column("shopper_id", ID, nullable=False),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index(
        "ix_offer_shopper_tokens_token", "offer_shopper_tokens", ["token", "expires_at"]
    )
    op.create_index("ix_offer_shopper_tokens_shopper", "offer_shopper_tokens", ["shopper_id"])
    op.create_table(
        "offer_campaigns",
        sa.Column("campaign_id", ID, primary_key=True),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "offers",
        sa.Column("offer_id", sa.String(64), primary_key=True),
        sa.Column("campaign_id", ID, nullable=False),
        sa.Column("store_id", ID, nullable=False),
        sa.Column("zone", ID, nullable=False),
        sa.Column("trigger", sa.String(8), nullable=False),
        sa.Column("shopper_id", ID, nullable=True),
        sa.Column("token", ID, nullable=True),
        sa.Column("visit_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(32), nullable=True),
        sa.Column("counts_toward_caps", sa.Boolean, nullable=False),
        sa.Column("local_day", sa.String(10), nullable=True),
        sa.Column("decided_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sa.Column("opened_at", TS, nullable=True),
        sa.Column("redeemed_at", TS, nullable=True),
        sa.Column("webhook_state", sa.String(8), nullable=True),
        sa.Column("webhook_attempts", sa.Integer, nullable=False),
        sa.Column("webhook_next_at", TS, nullable=True),
        sa.Column("webhook_error", sa.Text, nullable=True),
        sa.Column("payload", sa.JSON, nullable=True),
    )
    op.create_index("ix_offers_campaign_status", "offers", ["campaign_id", "status"])
    op.create_index("ix_offers_shopper_caps", "offers", ["shopper_id", "campaign_id", "local_day"])
    op.create_index("ix_offers_shopper_zone", "offers", ["shopper_id", "store_id", "zone"])
    op.create_index("ix_offers_webhook_due", "offers", ["webhook_state", "webhook_next_at"])
    op.create_index("ix_offers_decided_at", "offers", ["decided_at"])
    op.create_table(
        "offer_presence",
        sa.Column("store_id", ID, primary_key=True),
        sa.Column("shopper_id", ID, primary_key=True),
        sa.Column("token", ID, nullable=False),
        sa.Column("zone", ID, nullable=True),
        sa.Column("rssi", sa.Float, nullable=True),
        sa.Column("zone_at", TS, nullable=True),
        sa.Column("visit_id", sa.String(64), nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
    )
    op.create_index("ix_offer_presence_last_seen", "offer_presence", ["last_seen_at"])


def downgrade() -> None:
    for table in (
        "offer_presence",
        "offers",
        "offer_campaigns",
        "offer_shopper_tokens",
        "offer_shoppers",
    ):
        op.drop_table(table)
