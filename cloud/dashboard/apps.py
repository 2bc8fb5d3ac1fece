"""What the apps read that no domain serves as a list: recent orders and offers of a store
(ops dashboard, staff app), a shopper's own orders and offers, and the shopper's live feed.

The shopper's feed is an SSE stream of the cloud, not MQTT over WebSockets: the shipped
broker has one listener (TLS 8883, client certificates) that a browser cannot use, and a
browser MQTT client would be a vendored library to keep. The stream is opened the way the
dashboard's is: the app trades its key and the shopper id for a one-use token
(`POST /api/v1/app/session`), then `GET /api/v1/app/events?token=` sends only that
shopper's offers and order changes (`offer`, `order`). Each offer or order change on the
live bus costs one primary-key read per open shopper stream to find whose it is.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sse_starlette.sse import EventSourceResponse

from cloud.api.auth import Principal, client_ip, refuse_if_limited
from cloud.api.deps import Cloud, Reader, ShopperApp
from cloud.api.errors import ApiError, error_responses
from cloud.api.limits import AuthFailureLimiter
from cloud.api.timestamps import ApiTimestamp, iso_utc
from cloud.broker.policy import shopper_inbox
from cloud.bus import Change
from cloud.catalogue import products
from cloud.config import Role
from cloud.dashboard.tokens import SessionSigner
from cloud.lockers import tables as lockers
from cloud.offers import tables as offers
from protocols.ids import IDENTIFIER_PATTERN

IdPath = Annotated[str, Path(pattern=IDENTIFIER_PATTERN)]
StoreQuery = Annotated[str, Query(pattern=IDENTIFIER_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=200)]
# what a shopper sees of its offers: never the ones a gate blocked
SHOWN_OFFER_STATES = ("triggered", "delivered", "opened", "redeemed")


class AppSessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shopper_id: str = Field(pattern=IDENTIFIER_PATTERN)


class AppSessionOut(BaseModel):
    token: str
    expires_at: ApiTimestamp
    shopper_id: str


class AppShopperOut(BaseModel):
    shopper_id: str
    known: bool = Field(description="false: never registered (so nothing consented)")
    consent: bool
    consent_at: ApiTimestamp | None
    withdrawn_at: ApiTimestamp | None


class OrderItemOut(BaseModel):
    gtin: str
    quantity: int
    product: dict[str, Any] | None = Field(description="the catalogue's product, if known")


class LockerReturnSummary(BaseModel):
    """The order's newest return into a locker compartment (never its drop-off code)."""

    id: int
    state: str
    bank: str
    compartment: str
    expires_at: ApiTimestamp
    reason: str | None


class OrderSummary(BaseModel):
    order_id: str
    store: str
    state: str
    items: list[OrderItemOut]
    bank: str | None
    compartment: str | None
    hold_until: ApiTimestamp | None
    code_issued: bool
    created_at: ApiTimestamp
    updated_at: ApiTimestamp
    locker_return: LockerReturnSummary | None = None


class OfferSummary(BaseModel):
    offer_id: str
    store: str
    campaign: str
    zone: str
    status: str
    reason: str | None
    title: str | None
    body: str | None
    gtins: list[str]
    decided_at: ApiTimestamp
    expires_at: ApiTimestamp | None


async def _items(connection: AsyncConnection, rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    gtins = [str(line.get("gtin")) for row in rows for line in (row.items or [])]
    return await products.names(connection, gtins)


async def _locker_returns(
    connection: AsyncConnection, rows: Sequence[Any]
) -> dict[str, LockerReturnSummary]:
    """Each collected order's newest locker return (one query for a page of orders)."""
    ids = [row.order_id for row in rows if row.state == "collected"]
    if not ids:
        return {}
    t = lockers.locker_returns
    found = (
        await connection.execute(select(t).where(t.c.order_id.in_(ids)).order_by(t.c.id))
    ).all()
    return {
        r.order_id: LockerReturnSummary(
            id=r.id,
            state=r.state,
            bank=r.bank,
            compartment=r.compartment,
            expires_at=r.expires_at,
            reason=r.reason,
        )
        for r in found  # in id order: the newest one wins
    }


def _order(
    row: Any,
    catalogue: dict[str, dict[str, Any]],
    returns: dict[str, LockerReturnSummary],
) -> OrderSummary:
    return OrderSummary(
        order_id=row.order_id,
        store=row.store_id,
        state=row.state,
        items=[
            OrderItemOut(
                gtin=str(line.get("gtin")),
                quantity=int(line.get("quantity", 1)),
                product=catalogue.get(str(line.get("gtin"))),
            )
            for line in (row.items or [])
        ],
        bank=row.bank,
        compartment=row.compartment,
        hold_until=row.hold_until,
        code_issued=row.code_issued_at is not None,
        created_at=row.created_at,
        updated_at=row.updated_at,
        locker_return=returns.get(row.order_id),
    )


def _offer(row: Any) -> OfferSummary:
    payload = row.payload or {}
    return OfferSummary(
        offer_id=row.offer_id,
        store=row.store_id,
        campaign=row.campaign_id,
        zone=row.zone,
        status=row.status,
        reason=row.reason,
        title=payload.get("title"),
        body=payload.get("body"),
        gtins=[str(g) for g in payload.get("gtins", [])],
        decided_at=row.decided_at,
        expires_at=row.expires_at,
    )


async def _orders(engine: AsyncEngine, where: Any, limit: int) -> list[OrderSummary]:
    o = lockers.orders
    query = select(o).where(where).order_by(o.c.updated_at.desc(), o.c.seq.desc()).limit(limit)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
        catalogue = await _items(connection, rows)
        returns = await _locker_returns(connection, rows)
    return [_order(row, catalogue, returns) for row in rows]


async def _offers(engine: AsyncEngine, where: Any, limit: int) -> list[OfferSummary]:
    t = offers.offers
    query = select(t).where(where).order_by(t.c.decided_at.desc(), t.c.offer_id).limit(limit)
    async with engine.connect() as connection:
        rows = (await connection.execute(query)).all()
    return [_offer(row) for row in rows]


async def shopper_event(
    engine: AsyncEngine, shopper_id: str, change: Change
) -> dict[str, Any] | None:
    """The change as the shopper's stream sends it, or None when it is not theirs."""
    if change.kind == "offer":
        offer_id = change.data.get("offer_id")
        status = change.data.get("status")
        if not isinstance(offer_id, str) or status not in SHOWN_OFFER_STATES:
            return None
        t = offers.offers
        async with engine.connect() as connection:
            row = (await connection.execute(select(t).where(t.c.offer_id == offer_id))).first()
        if row is None or row.shopper_id != shopper_id:
            return None
        return {"kind": "offer", "data": _offer(row).model_dump(mode="json")}
    if change.kind == "order":
        order_id = change.data.get("order_id")
        if not isinstance(order_id, str):
            return None
        o = lockers.orders
        async with engine.connect() as connection:
            row = (await connection.execute(select(o).where(o.c.order_id == order_id))).first()
            if row is None or row.shopper != shopper_inbox(shopper_id):
                return None
            catalogue = await _items(connection, [row])
            returns = await _locker_returns(connection, [row])
        return {"kind": "order", "data": _order(row, catalogue, returns).model_dump(mode="json")}
    return None


def build_apps_router(signer: SessionSigner, *, stream_max_age_s: float) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["apps"])

    @router.get("/dashboard/orders", responses=error_responses(404))
    async def store_orders(
        store: StoreQuery, principal: Reader, cloud: Cloud, limit: Limit = 50
    ) -> list[OrderSummary]:
        """A store's orders, most recently changed first, with the catalogue's products."""
        principal.check_store(store)
        if not cloud.registry.knows_store(store):
            raise ApiError(404, "not_found", f"store {store!r} is not registered")
        return await _orders(cloud.engine, lockers.orders.c.store_id == store, limit)

    @router.get("/dashboard/offers", responses=error_responses(404))
    async def store_offers(
        store: StoreQuery, principal: Reader, cloud: Cloud, limit: Limit = 50
    ) -> list[OfferSummary]:
        """A store's offer decisions (sent and suppressed), newest first."""
        principal.check_store(store)
        if not cloud.registry.knows_store(store):
            raise ApiError(404, "not_found", f"store {store!r} is not registered")
        return await _offers(cloud.engine, offers.offers.c.store_id == store, limit)

    @router.get("/app/shoppers/{shopper_id}")
    async def app_shopper(shopper_id: IdPath, _p: ShopperApp, cloud: Cloud) -> AppShopperOut:
        """The shopper's consent as the app shows it; a shopper never registered is simply
        not opted in (no 404 for the app to handle)."""
        s = offers.shoppers
        async with cloud.engine.connect() as connection:
            row = (await connection.execute(select(s).where(s.c.shopper_id == shopper_id))).first()
        return AppShopperOut(
            shopper_id=shopper_id,
            known=row is not None,
            consent=bool(row is not None and row.consent),
            consent_at=None if row is None else row.consent_at,
            withdrawn_at=None if row is None else row.withdrawn_at,
        )

    @router.get("/app/shoppers/{shopper_id}/orders")
    async def shopper_orders(
        shopper_id: IdPath, _p: ShopperApp, cloud: Cloud, limit: Limit = 20
    ) -> list[OrderSummary]:
        """The orders placed for this shopper (with `shopper` = its inbox), newest first."""
        where = lockers.orders.c.shopper == shopper_inbox(shopper_id)
        return await _orders(cloud.engine, where, limit)

    @router.get("/app/shoppers/{shopper_id}/offers")
    async def shopper_offers(
        shopper_id: IdPath, _p: ShopperApp, cloud: Cloud, limit: Limit = 20
    ) -> list[OfferSummary]:
        """The offers sent to this shopper, newest first (never the suppressed ones)."""
        t = offers.offers
        where = (t.c.shopper_id == shopper_id) & t.c.status.in_(SHOWN_OFFER_STATES)
        return await _offers(cloud.engine, where, limit)

    @router.post("/app/session")
    async def app_session(body: AppSessionIn, principal: ShopperApp) -> AppSessionOut:
        """A one-use token that opens `/api/v1/app/events` for one shopper (EventSource
        cannot send the key, and the key must not travel in a URL)."""
        issued = signer.issue(Principal(body.shopper_id, Role.SHOPPER_APP, frozenset()))
        return AppSessionOut(
            token=issued.token,
            expires_at=datetime.fromtimestamp(issued.expires_at, UTC),
            shopper_id=body.shopper_id,
        )

    @router.get(
        "/app/events",
        response_model=None,
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **error_responses(401, 429)},
    )
    async def app_events(
        request: Request, cloud: Cloud, token: Annotated[str | None, Query()] = None
    ) -> EventSourceResponse:
        """One shopper's offers and order changes, live: `{"kind": "offer"|"order",
        "data": {...}}` (the shapes of `/app/shoppers/{id}/offers` and `/orders`)."""
        limiter: AuthFailureLimiter = request.app.state.auth_limiter
        ip = client_ip(request)
        refuse_if_limited(limiter, ip, None)
        try:
            shopper = signer.redeem(token)
        except ApiError as refused:
            if refused.status == 401:
                limiter.failed(ip, None)
            raise

        async def stream() -> AsyncIterator[dict[str, str]]:
            subscription = cloud.bus.subscribe()
            try:
                yield {"data": json.dumps({"kind": "hello", "shopper_id": shopper.name})}
                deadline = time.monotonic() + stream_max_age_s
                while True:
                    try:
                        async with asyncio.timeout(deadline - time.monotonic()):
                            change = await subscription.get()
                    except TimeoutError:
                        return
                    event = await shopper_event(cloud.engine, shopper.name, change)
                    if event is not None:
                        event["at"] = iso_utc(change.at)
                        yield {"data": json.dumps(event, default=str)}
            finally:
                subscription.close()

        return EventSourceResponse(stream(), ping=15)

    return router
