"""The offers domain's tables (on the shared metadata; created by revision 0005).

Privacy: no table holds a MAC address (the edge never sends one). A shopper is a stable id
chosen by the app's backend; the rotating tokens the phone advertises map to it only for the
validity window the app registered. Presence (`offer_presence`) is kept only for consenting
shoppers and only for the current visit (see docs/offers.md, "Privacy and retention").
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from cloud.state.schema import ID, TS, metadata

shoppers = Table(
    "offer_shoppers",
    metadata,
    Column("shopper_id", ID, primary_key=True),
    Column("segment", ID, nullable=True),
    Column("consent", Boolean, nullable=False, default=False),
    Column("consent_at", TS, nullable=True),
    Column("withdrawn_at", TS, nullable=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

shopper_tokens = Table(
    "offer_shopper_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", ID, nullable=False),
    Column("shopper_id", ID, nullable=False),
    Column("valid_from", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
)
Index("ix_offer_shopper_tokens_token", shopper_tokens.c.token, shopper_tokens.c.expires_at)
Index("ix_offer_shopper_tokens_shopper", shopper_tokens.c.shopper_id)

campaigns = Table(
    "offer_campaigns",
    metadata,
    Column("campaign_id", ID, primary_key=True),
    Column("definition", JSON, nullable=False),  # the validated CampaignSpec, as JSON
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# One row per decision that reached a campaign: triggered offers (which then move on to
# delivered / opened / redeemed) and suppressions with the gate that blocked them. Rows of
# consent-blocked decisions are anonymous (no shopper, no token).
offers = Table(
    "offers",
    metadata,
    Column("offer_id", String(64), primary_key=True),
    Column("campaign_id", ID, nullable=False),
    Column("store_id", ID, nullable=False),
    Column("zone", ID, nullable=False),
    Column("trigger", String(8), nullable=False),
    Column("shopper_id", ID, nullable=True),
    Column("token", ID, nullable=True),
    Column("visit_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("reason", String(32), nullable=True),
    Column("counts_toward_caps", Boolean, nullable=False, default=False),
    Column("local_day", String(10), nullable=True),  # YYYY-MM-DD in the campaign's timezone
    Column("decided_at", TS, nullable=False),
    Column("expires_at", TS, nullable=True),
    Column("delivered_at", TS, nullable=True),
    Column("opened_at", TS, nullable=True),
    Column("redeemed_at", TS, nullable=True),
    Column("webhook_state", String(8), nullable=True),  # pending | done | failed | None
    Column("webhook_attempts", Integer, nullable=False, default=0),
    Column("webhook_next_at", TS, nullable=True),
    Column("webhook_error", Text, nullable=True),
    Column("payload", JSON, nullable=True),  # the Offer as sent (webhook body)
)
Index("ix_offers_campaign_status", offers.c.campaign_id, offers.c.status)
Index("ix_offers_shopper_caps", offers.c.shopper_id, offers.c.campaign_id, offers.c.local_day)
Index("ix_offers_shopper_zone", offers.c.shopper_id, offers.c.store_id, offers.c.zone)
Index("ix_offers_webhook_due", offers.c.webhook_state, offers.c.webhook_next_at)
Index("ix_offers_decided_at", offers.c.decided_at)

# Where each consenting shopper is, per store, after cross-node arbitration; one row per
# (store, shopper) for the length of a visit.
presence = Table(
    "offer_presence",
    metadata,
    Column("store_id", ID, primary_key=True),
    Column("shopper_id", ID, primary_key=True),
    Column("token", ID, nullable=False),
    Column("zone", ID, nullable=True),  # None: between zones (exited)
    Column("rssi", Float, nullable=True),
    Column("zone_at", TS, nullable=True),  # when the current zone was entered
    Column("visit_id", String(64), nullable=False),
    Column("last_seen_at", TS, nullable=False),
)
Index("ix_offer_presence_last_seen", presence.c.last_seen_at)

__all__ = ["campaigns", "offers", "presence", "shopper_tokens", "shoppers"]
