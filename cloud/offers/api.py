"""Offer endpoints: shoppers and consent, rotating tokens, campaigns, the app's feedback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from cloud.api.deps import Cloud, Ops, Reader, ShopperApp
from cloud.api.errors import ApiError, error_responses
from cloud.api.timestamps import ApiTimestamp
from cloud.offers import broker_logins, registry
from cloud.offers.campaigns import CampaignSpec
from cloud.offers.delivery import advance
from cloud.offers.engine import CampaignCache
from protocols.ids import IDENTIFIER_PATTERN
from protocols.messages import utc_now

T = TypeVar("T")
IdPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
OfferIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class ShopperIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    consent: bool = Field(description="opt-in to proximity offers")
    segment: str | None = Field(default=None, pattern=IDENTIFIER_PATTERN)


class ShopperOut(BaseModel):
    shopper_id: str
    consent: bool
    segment: str | None
    consent_at: ApiTimestamp | None
    withdrawn_at: ApiTimestamp | None


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(
        pattern=r"^[0-9a-f]{1,64}$",
        description="the token the phone advertises (beacon id app:<token>), lowercase hex",
    )
    valid_from: AwareDatetime | None = None
    expires_at: AwareDatetime


class TokenOut(BaseModel):
    token: str
    valid_from: ApiTimestamp
    expires_at: ApiTimestamp


class ShopperTopicsOut(BaseModel):
    offers: str = Field(description="subscribe here (QoS 1) for proximity offers")
    orders: str = Field(description="subscribe here (QoS 1) for BOPIS order updates")


class BrokerLoginOut(BaseModel):
    """The shopper app's own MQTT login: read its two topics, nothing else."""

    username: str
    password: str = Field(description="shown once; the broker keeps only a salted hash")
    client_id: str = Field(description="the broker accepts this login with this client id only")
    inbox: str = Field(
        description="the shopper's level in its topics; give it as `shopper` when creating an"
        " order so the app receives its order updates"
    )
    topics: ShopperTopicsOut


class CampaignOut(BaseModel):
    campaign_id: str
    active: bool
    definition: CampaignSpec
    created_at: ApiTimestamp
    updated_at: ApiTimestamp


class CampaignCounts(BaseModel):
    campaign: str
    triggered: int = Field(description="offers sent (reached this stage or further)")
    delivered: int
    opened: int
    redeemed: int
    suppressed: dict[str, int] = Field(description="blocked decisions per gate")
    holdout: int = Field(description="control group: would have been sent")


class OfferProgress(BaseModel):
    offer_id: str
    status: str
    changed: bool


async def _call(work: Awaitable[T]) -> T:
    try:
        return await work
    except registry.RegistryError as exc:
        raise ApiError(exc.status, exc.error, exc.detail) from None


def build_router(campaigns: CampaignCache) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["offers"])

    @router.put("/shoppers/{shopper_id}")
    async def put_shopper(
        shopper_id: IdPath, body: ShopperIn, _p: ShopperApp, cloud: Cloud
    ) -> ShopperOut:
        """Create or update a shopper: consent (opt-in / withdrawal) and segment."""
        row = await registry.set_shopper(
            cloud.engine, shopper_id, consent=body.consent, segment=body.segment
        )
        if not body.consent:
            await broker_logins.revoke(cloud.settings, shopper_id)
        return ShopperOut(**{k: row[k] for k in ShopperOut.model_fields})

    @router.get("/shoppers/{shopper_id}")
    async def get_shopper(shopper_id: IdPath, _p: ShopperApp, cloud: Cloud) -> ShopperOut:
        row = await _call(registry.get_shopper(cloud.engine, shopper_id))
        return ShopperOut(**{k: row[k] for k in ShopperOut.model_fields})

    @router.delete("/shoppers/{shopper_id}", status_code=204)
    async def erase_shopper(shopper_id: IdPath, _p: ShopperApp, cloud: Cloud) -> None:
        """Erase a shopper: identity, tokens, presence and broker login; their offers stay
        anonymous."""
        await registry.erase_shopper(cloud.engine, shopper_id)
        await broker_logins.revoke(cloud.settings, shopper_id)

    @router.post("/shoppers/{shopper_id}/broker-login", status_code=201)
    async def create_broker_login(
        shopper_id: IdPath, _p: ShopperApp, cloud: Cloud
    ) -> BrokerLoginOut:
        """Give an opted-in shopper's app its own broker login, for its offers and order
        updates. Calling again replaces it (a new password; the old one stops working)."""
        row = await _call(registry.get_shopper(cloud.engine, shopper_id))
        if not row["consent"]:
            raise ApiError(409, "conflict", "the shopper has not opted in to offers")
        login = await broker_logins.create(cloud.settings, shopper_id)
        return BrokerLoginOut(
            username=login.username,
            password=login.password,
            client_id=login.username,
            inbox=login.inbox,
            topics=ShopperTopicsOut(offers=login.topics.offers, orders=login.topics.orders),
        )

    @router.post("/shoppers/{shopper_id}/tokens", status_code=201)
    async def add_token(
        shopper_id: IdPath, body: TokenIn, _p: ShopperApp, cloud: Cloud
    ) -> TokenOut:
        """Register a rotating token (ahead of its use; at most 24 h of validity)."""
        row = await _call(
            registry.add_token(
                cloud.engine,
                shopper_id,
                body.token,
                expires_at=body.expires_at,
                valid_from=body.valid_from,
            )
        )
        return TokenOut(**row)

    @router.put("/campaigns/{campaign_id}")
    async def put_campaign(
        campaign_id: IdPath, body: CampaignSpec, _p: Ops, cloud: Cloud
    ) -> CampaignOut:
        await registry.put_campaign(cloud.engine, campaign_id, body)
        campaigns.invalidate()
        return _campaign_out((await registry.list_campaigns(cloud.engine, campaign_id))[0])

    @router.get("/campaigns")
    async def list_campaigns(_p: Reader, cloud: Cloud) -> list[CampaignOut]:
        return [_campaign_out(row) for row in await registry.list_campaigns(cloud.engine)]

    @router.get("/campaigns/{campaign_id}")
    async def get_campaign(campaign_id: IdPath, _p: Reader, cloud: Cloud) -> CampaignOut:
        rows = await registry.list_campaigns(cloud.engine, campaign_id)
        if not rows:
            raise ApiError(404, "not_found", f"no campaign {campaign_id!r}")
        return _campaign_out(rows[0])

    @router.delete("/campaigns/{campaign_id}", status_code=204)
    async def stop_campaign(campaign_id: IdPath, _p: Ops, cloud: Cloud) -> None:
        """Deactivate (its analytics stay)."""
        await _call(registry.deactivate_campaign(cloud.engine, campaign_id))
        campaigns.invalidate()

    @router.get("/campaigns/{campaign_id}/counts")
    async def counts(campaign_id: IdPath, _p: Reader, cloud: Cloud) -> CampaignCounts:
        return CampaignCounts(**await registry.campaign_counts(cloud.engine, campaign_id))

    def progress(stage: str) -> Callable[..., Awaitable[OfferProgress]]:
        async def mark(offer_id: OfferIdPath, _p: ShopperApp, cloud: Cloud) -> OfferProgress:
            moved = await advance(cloud.engine, [offer_id], stage, utc_now(), cloud.bus)
            status = await registry.offer_status(cloud.engine, offer_id)
            if status is None:
                raise ApiError(404, "not_found", f"no offer {offer_id!r}")
            if status == "suppressed":
                raise ApiError(409, "conflict", "this offer was never sent")
            return OfferProgress(offer_id=offer_id, status=status, changed=bool(moved))

        mark.__name__ = f"offer_{stage}"
        mark.__doc__ = f"The app reports the offer {stage} (idempotent; never moves back)."
        return mark

    for stage in ("opened", "redeemed"):
        router.post(f"/offers/{{offer_id}}/{stage}", responses=error_responses(409))(
            progress(stage)
        )
    return router


def _campaign_out(row: Any) -> CampaignOut:
    return CampaignOut(
        campaign_id=row.campaign_id,
        active=bool(row.active),
        definition=CampaignSpec.model_validate(row.definition),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
