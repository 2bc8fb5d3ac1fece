"""Shoppers, consent, rotating tokens and campaigns: the writes behind the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.broker.policy import shopper_inbox
from cloud.offers import tables
from cloud.offers.campaigns import CampaignSpec, as_utc
from cloud.state.db import upsert, writing
from protocols.messages import utc_now

MAX_TOKEN_LIFETIME = timedelta(days=1)


class RegistryError(ValueError):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


async def set_shopper(
    engine: AsyncEngine, shopper_id: str, *, consent: bool, segment: str | None
) -> dict[str, Any]:
    """Create or update a shopper; withdrawing consent also forgets where they are."""
    s = tables.shoppers
    now = utc_now()
    async with writing(engine) as connection:
        row = (await connection.execute(select(s).where(s.c.shopper_id == shopper_id))).first()
        consent_at = row.consent_at if row else None
        withdrawn_at = row.withdrawn_at if row else None
        if consent and not (row and row.consent):
            consent_at, withdrawn_at = now, None
        elif not consent and row and row.consent:
            withdrawn_at = now
        values = {
            "shopper_id": shopper_id,
            "segment": segment,
            "consent": consent,
            "consent_at": consent_at,
            "withdrawn_at": withdrawn_at,
            "created_at": row.created_at if row else now,
            "updated_at": now,
        }
        await upsert(connection, s, [values], keys=("shopper_id",))
        if not consent:
            p = tables.presence
            await connection.execute(delete(p).where(p.c.shopper_id == shopper_id))
    return values


async def get_shopper(engine: AsyncEngine, shopper_id: str) -> dict[str, Any]:
    s = tables.shoppers
    async with engine.connect() as connection:
        row = (await connection.execute(select(s).where(s.c.shopper_id == shopper_id))).first()
    if row is None:
        raise RegistryError(404, "not_found", f"no shopper {shopper_id!r}")
    return dict(row._mapping)


async def erase_shopper(engine: AsyncEngine, shopper_id: str) -> None:
    """Right to erasure: the shopper, their tokens and presence go; their offers stay as
    anonymous counts."""
    async with writing(engine) as connection:
        for table in (tables.shopper_tokens, tables.presence, tables.shoppers):
            await connection.execute(delete(table).where(table.c.shopper_id == shopper_id))
        o = tables.offers
        await connection.execute(
            update(o).where(o.c.shopper_id == shopper_id).values(shopper_id=None, token=None)
        )


async def add_token(
    engine: AsyncEngine,
    shopper_id: str,
    token: str,
    *,
    expires_at: datetime,
    valid_from: datetime | None = None,
) -> dict[str, Any]:
    """Register the next rotating token of a shopper's phone (the app does, ahead of time)."""
    start = valid_from or utc_now()
    if expires_at <= start:
        raise RegistryError(422, "invalid_request", "expires_at must be after valid_from")
    if expires_at - start > MAX_TOKEN_LIFETIME:
        raise RegistryError(
            422, "invalid_request", "a token may live at most 24 h (tokens are meant to rotate)"
        )
    if shopper_inbox(shopper_id) in token:
        # The phone broadcasts its tokens; its inbox (and broker login) must stay unknown.
        raise RegistryError(422, "invalid_request", "a token must not contain the app's inbox")
    t, s = tables.shopper_tokens, tables.shoppers
    async with writing(engine) as connection:
        known = (
            await connection.execute(select(s.c.shopper_id).where(s.c.shopper_id == shopper_id))
        ).first()
        if known is None:
            raise RegistryError(404, "not_found", f"no shopper {shopper_id!r}")
        clash = (
            await connection.execute(
                select(func.count())
                .select_from(t)
                .where(
                    and_(
                        t.c.token == token,
                        t.c.shopper_id != shopper_id,
                        t.c.valid_from < expires_at,
                        t.c.expires_at > start,
                    )
                )
            )
        ).scalar()
        if clash:
            raise RegistryError(
                409, "conflict", "this token is registered to another shopper for that time"
            )
        await connection.execute(
            t.insert().values(
                token=token, shopper_id=shopper_id, valid_from=start, expires_at=expires_at
            )
        )
    return {"token": token, "valid_from": start, "expires_at": expires_at}


async def put_campaign(engine: AsyncEngine, campaign_id: str, spec: CampaignSpec) -> bool:
    """Create or replace; True when it was created."""
    c = tables.campaigns
    now = utc_now()
    async with writing(engine) as connection:
        row = (
            await connection.execute(select(c.c.created_at).where(c.c.campaign_id == campaign_id))
        ).first()
        await upsert(
            connection,
            c,
            [
                {
                    "campaign_id": campaign_id,
                    "definition": spec.model_dump(mode="json"),
                    "active": True,
                    "created_at": row.created_at if row else now,
                    "updated_at": now,
                }
            ],
            keys=("campaign_id",),
        )
    return row is None


async def list_campaigns(engine: AsyncEngine, campaign_id: str | None = None) -> list[Any]:
    c = tables.campaigns
    query = select(c).order_by(c.c.campaign_id)
    if campaign_id is not None:
        query = query.where(c.c.campaign_id == campaign_id)
    async with engine.connect() as connection:
        return list((await connection.execute(query)).all())


async def deactivate_campaign(engine: AsyncEngine, campaign_id: str) -> None:
    c = tables.campaigns
    async with writing(engine) as connection:
        result = await connection.execute(
            update(c)
            .where(c.c.campaign_id == campaign_id)
            .values(active=False, updated_at=utc_now())
        )
    if result.rowcount == 0:
        raise RegistryError(404, "not_found", f"no campaign {campaign_id!r}")


async def campaign_counts(engine: AsyncEngine, campaign_id: str) -> dict[str, Any]:
    """Funnel of one campaign: every stage reached, suppressions per reason."""
    o = tables.offers
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                select(o.c.status, o.c.reason, func.count().label("n"))
                .where(o.c.campaign_id == campaign_id)
                .group_by(o.c.status, o.c.reason)
            )
        ).all()
    by_status: dict[str, int] = {}
    suppressed: dict[str, int] = {}
    for row in rows:
        if row.status == "suppressed":
            suppressed[row.reason] = suppressed.get(row.reason, 0) + row.n
        else:
            by_status[row.status] = by_status.get(row.status, 0) + row.n
    # A stage counts every offer that reached it or went further.
    order = ("triggered", "delivered", "opened", "redeemed")
    reached = {stage: sum(by_status.get(s, 0) for s in order[i:]) for i, stage in enumerate(order)}
    return {
        "campaign": campaign_id,
        **reached,
        "suppressed": dict(sorted(suppressed.items())),
        "holdout": suppressed.get("holdout", 0),
    }


async def housekeeping(
    engine: AsyncEngine, *, visit_gap_s: float, token_grace_s: float, retention_days: int
) -> dict[str, int]:
    """Retention: end visits, forget expired tokens, drop old decisions."""
    now = utc_now()
    p, t, o = tables.presence, tables.shopper_tokens, tables.offers
    async with writing(engine) as connection:
        ended = await connection.execute(
            delete(p).where(p.c.last_seen_at < now - timedelta(seconds=visit_gap_s))
        )
        tokens = await connection.execute(
            delete(t).where(t.c.expires_at < now - timedelta(seconds=token_grace_s))
        )
        old = await connection.execute(
            delete(o).where(o.c.decided_at < now - timedelta(days=retention_days))
        )
    return {"visits": ended.rowcount, "tokens": tokens.rowcount, "offers": old.rowcount}


__all__ = ["RegistryError", "as_utc"]


async def offer_status(engine: AsyncEngine, offer_id: str) -> str | None:
    o = tables.offers
    async with engine.connect() as connection:
        return (
            await connection.execute(select(o.c.status).where(o.c.offer_id == offer_id))
        ).scalar()
