"""The inventory domain's routes: reorder points, planograms, alerts, bulk availability.

Writes (reorder points, planograms, acknowledging an alert) are for ops and for staff on
their own stores; every write re-evaluates the store's alerts in the same transaction and
announces the alert changes on the live bus after the commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.api.auth import Principal
from cloud.api.deps import Cloud, Reader, Shopping
from cloud.api.errors import ApiError
from cloud.api.params import MAX_ROW_ID, RowIdPath
from cloud.api.timestamps import ApiTimestamp
from cloud.bus import Change
from cloud.config import Role
from cloud.context import CloudContext
from cloud.inventory.evaluate import alert_data
from cloud.inventory.feed import feed_rows, render
from cloud.inventory.operations_api import add_operations_routes
from cloud.inventory.rules import AlertState, AlertType
from cloud.inventory.stock import levels
from cloud.inventory.tables import inventory_alerts, planograms, reorder_points
from cloud.state.db import upsert, writing
from protocols.ids import Gtin, Identifier
from protocols.messages import utc_now

if TYPE_CHECKING:
    from cloud.inventory import InventoryDomain

GTIN_PATH = PathParam(pattern=r"^[0-9]{14}$")
MAX_ITEMS = 10_000  # reorder points or planogram entries per bulk request


class ReorderPointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gtin: Gtin
    reorder_point: int = Field(ge=0, le=1_000_000)
    shelf: Identifier | None = Field(default=None, description="None: the store-wide total")


class ReorderPointValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reorder_point: int = Field(ge=0, le=1_000_000)
    shelf: Identifier | None = None


class ReorderPointsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ReorderPointIn] = Field(max_length=MAX_ITEMS)


class ReorderPointOut(BaseModel):
    gtin: str
    shelf: str | None
    reorder_point: int
    source: str = Field(description="api (set here) or config (domains.inventory)")
    updated_at: ApiTimestamp | None = None
    updated_by: str | None = None


class PlanogramIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shelves: dict[Identifier, list[Gtin]] = Field(
        description="shelf -> the GTINs that belong there; [] = nothing belongs there"
    )


class ShelfPlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gtins: list[Gtin] = Field(max_length=MAX_ITEMS)


class PlanogramOut(BaseModel):
    store: str
    shelves: dict[str, list[str]]


class AlertOut(BaseModel):
    id: int
    type: str
    state: str
    store: str
    shelf: str | None
    gtin: str
    count: int
    reorder_point: int | None
    raised_at: str
    cleared_at: str | None
    acknowledged_at: str | None
    acknowledged_by: str | None
    details: dict[str, Any]


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_before: int | None = Field(description="pass as `before` for the next (older) page")


class StoreStock(BaseModel):
    store: str
    on_hand: int = Field(description="items on the store's shelves, as RFID counts them")
    on_hand_by_zone: dict[str, int] = Field(
        description="on_hand per zone of its shelves (sales_floor, backroom, exit ...)"
    )
    reserved: int = Field(description="units promised to open online orders, still on shelves")
    safety_stock: int
    available: int = Field(
        description="what the webshop may sell: on hand - reserved - safety stock, never < 0"
    )
    shelves: int = Field(description="shelves holding the GTIN")
    updated_at: ApiTimestamp | None


class GtinAvailability(BaseModel):
    gtin: str
    available: int
    stores: list[StoreStock]


class BulkAvailability(BaseModel):
    items: list[GtinAvailability]


def create_router(domain: InventoryDomain) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["inventory"])
    evaluator = domain.evaluator
    options = domain.options

    async def reevaluate(connection: AsyncConnection, store: str) -> list[Change]:
        changes = await evaluator.evaluate(connection, store, None)
        return [Change("alert", store, data) for data in changes]

    def announce(cloud: CloudContext, changes: list[Change]) -> None:
        for change in changes:
            cloud.bus.publish(change)

    # ------------------------------------------------------------------ reorder points

    @router.get("/stores/{store}/reorder-points")
    async def get_reorder_points(
        store: str, principal: Reader, cloud: Cloud
    ) -> list[ReorderPointOut]:
        """Reorder points of a store: those set here, then config defaults not overridden."""
        _check(cloud, principal, store)
        t = reorder_points
        async with cloud.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(t).where(t.c.store_id == store).order_by(t.c.gtin, t.c.shelf)
                )
            ).all()
        out = [
            ReorderPointOut(
                gtin=row.gtin,
                shelf=row.shelf or None,
                reorder_point=row.reorder_point,
                source="api",
                updated_at=row.updated_at,
                updated_by=row.updated_by,
            )
            for row in rows
        ]
        seen = {(p.shelf, p.gtin) for p in out}
        for entry in options.reorder_points:
            key = (entry.shelf, entry.gtin)
            if entry.store in (None, store) and key not in seen:
                point = options.configured_point(store, entry.gtin, entry.shelf)
                if point is not None:
                    seen.add(key)
                    out.append(
                        ReorderPointOut(
                            gtin=entry.gtin,
                            shelf=entry.shelf,
                            reorder_point=point,
                            source="config",
                        )
                    )
        return out

    @router.put("/stores/{store}/reorder-points")
    async def put_reorder_points(
        store: str, body: ReorderPointsIn, principal: Reader, cloud: Cloud
    ) -> list[ReorderPointOut]:
        """Replace every reorder point set through the API for this store (bulk)."""
        _check(cloud, principal, store)
        keys = [(item.gtin, item.shelf or "") for item in body.items]
        if len(set(keys)) != len(keys):
            raise ApiError(422, "invalid_request", "a (gtin, shelf) is listed twice")
        now = utc_now()
        async with writing(cloud.engine) as connection:
            t = reorder_points
            await connection.execute(delete(t).where(t.c.store_id == store))
            await upsert(
                connection,
                t,
                [_point_row(store, item.gtin, item.shelf, item.reorder_point, principal, now)
                 for item in body.items],
                keys=("store_id", "gtin", "shelf"),
            )  # fmt: skip
            changes = await reevaluate(connection, store)
        announce(cloud, changes)
        return await get_reorder_points(store, principal, cloud)

    @router.put("/stores/{store}/reorder-points/{gtin}")
    async def put_reorder_point(
        store: str,
        gtin: Annotated[str, GTIN_PATH],
        body: ReorderPointValue,
        principal: Reader,
        cloud: Cloud,
    ) -> ReorderPointOut:
        """Set one reorder point (store-wide, or for one shelf with `shelf`)."""
        _check(cloud, principal, store)
        now = utc_now()
        async with writing(cloud.engine) as connection:
            await upsert(
                connection,
                reorder_points,
                [_point_row(store, gtin, body.shelf, body.reorder_point, principal, now)],
                keys=("store_id", "gtin", "shelf"),
            )
            changes = await reevaluate(connection, store)
        announce(cloud, changes)
        return ReorderPointOut(
            gtin=gtin,
            shelf=body.shelf,
            reorder_point=body.reorder_point,
            source="api",
            updated_at=now,
            updated_by=principal.name,
        )

    @router.delete("/stores/{store}/reorder-points/{gtin}", status_code=204)
    async def delete_reorder_point(
        store: str,
        gtin: Annotated[str, GTIN_PATH],
        principal: Reader,
        cloud: Cloud,
        shelf: Annotated[
            str | None, Query(description="the shelf's point; none: store-wide")
        ] = None,
    ) -> None:
        """Remove a reorder point set through the API (a config default may then apply)."""
        _check(cloud, principal, store)
        t = reorder_points
        async with writing(cloud.engine) as connection:
            result = await connection.execute(
                delete(t).where(t.c.store_id == store, t.c.gtin == gtin, t.c.shelf == (shelf or ""))
            )
            if not result.rowcount:
                raise ApiError(404, "not_found", f"no reorder point for {gtin} at {store!r}")
            changes = await reevaluate(connection, store)
        announce(cloud, changes)

    # ------------------------------------------------------------------ planogram

    @router.get("/stores/{store}/planogram")
    async def get_planogram(store: str, principal: Reader, cloud: Cloud) -> PlanogramOut:
        _check(cloud, principal, store)
        t = planograms
        async with cloud.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(t.c.shelf, t.c.gtins).where(t.c.store_id == store).order_by(t.c.shelf)
                )
            ).all()
        return PlanogramOut(store=store, shelves={row.shelf: list(row.gtins) for row in rows})

    @router.put("/stores/{store}/planogram")
    async def put_planogram(
        store: str, body: PlanogramIn, principal: Reader, cloud: Cloud
    ) -> PlanogramOut:
        """Replace the store's whole planogram (bulk upload); unlisted shelves are unplanned."""
        _check(cloud, principal, store)
        if len(body.shelves) + sum(len(g) for g in body.shelves.values()) > MAX_ITEMS:
            raise ApiError(422, "invalid_request", f"at most {MAX_ITEMS} planogram entries")
        now = utc_now()
        async with writing(cloud.engine) as connection:
            await connection.execute(delete(planograms).where(planograms.c.store_id == store))
            rows = [
                _plan_row(store, shelf, gtins, principal, now)
                for shelf, gtins in body.shelves.items()
            ]
            if rows:
                await connection.execute(planograms.insert(), rows)
            changes = await reevaluate(connection, store)
        announce(cloud, changes)
        return await get_planogram(store, principal, cloud)

    @router.put("/stores/{store}/planogram/{shelf}")
    async def put_shelf_plan(
        store: str,
        shelf: Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")],
        body: ShelfPlanIn,
        principal: Reader,
        cloud: Cloud,
    ) -> PlanogramOut:
        """Set which GTINs belong on one shelf."""
        _check(cloud, principal, store)
        async with writing(cloud.engine) as connection:
            await upsert(
                connection,
                planograms,
                [_plan_row(store, shelf, body.gtins, principal, utc_now())],
                keys=("store_id", "shelf"),
            )
            changes = await reevaluate(connection, store)
        announce(cloud, changes)
        return await get_planogram(store, principal, cloud)

    @router.delete("/stores/{store}/planogram/{shelf}", status_code=204)
    async def delete_shelf_plan(store: str, shelf: str, principal: Reader, cloud: Cloud) -> None:
        """The shelf is no longer planned: its misplaced-item alerts clear."""
        _check(cloud, principal, store)
        t = planograms
        async with writing(cloud.engine) as connection:
            result = await connection.execute(
                delete(t).where(t.c.store_id == store, t.c.shelf == shelf)
            )
            if not result.rowcount:
                raise ApiError(404, "not_found", f"shelf {shelf!r} has no planogram at {store!r}")
            changes = await reevaluate(connection, store)
        announce(cloud, changes)

    # ------------------------------------------------------------------ alerts

    @router.get("/alerts")
    async def list_alerts(
        principal: Reader,
        cloud: Cloud,
        store: Annotated[str | None, Query()] = None,
        state: Annotated[AlertState | None, Query()] = None,
        alert_type: Annotated[AlertType | None, Query(alias="type")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        before: Annotated[
            int | None, Query(ge=1, le=MAX_ROW_ID, description="id to page back from")
        ] = None,
    ) -> AlertPage:
        """Alerts, newest first. Staff see only their stores."""
        t = inventory_alerts
        query = select(t).order_by(t.c.id.desc()).limit(limit)
        if store is not None:
            principal.check_store(store)
            query = query.where(t.c.store_id == store)
        elif principal.role is Role.STAFF:
            query = query.where(t.c.store_id.in_(sorted(principal.stores)))
        if state is not None:
            query = query.where(t.c.state == state.value)
        if alert_type is not None:
            query = query.where(t.c.type == alert_type.value)
        if before is not None:
            query = query.where(t.c.id < before)
        async with cloud.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        items = [AlertOut(**alert_data(row)) for row in rows]
        return AlertPage(items=items, next_before=items[-1].id if len(items) == limit else None)

    @router.get("/alerts/{alert_id}")
    async def get_alert(alert_id: RowIdPath, principal: Reader, cloud: Cloud) -> AlertOut:
        async with cloud.engine.connect() as connection:
            row = await _alert(connection, alert_id, principal)
        return AlertOut(**alert_data(row))

    @router.post("/alerts/{alert_id}/ack")
    async def acknowledge(alert_id: RowIdPath, principal: Reader, cloud: Cloud) -> AlertOut:
        """Someone is on it. Acknowledging does not clear: the counts do. Idempotent: the
        first acknowledgement is kept."""
        t = inventory_alerts
        async with writing(cloud.engine) as connection:
            row = await _alert(connection, alert_id, principal)
            if row.acknowledged_at is None:
                await connection.execute(
                    update(t)
                    .where(t.c.id == alert_id, t.c.acknowledged_at.is_(None))
                    .values(acknowledged_at=utc_now(), acknowledged_by=principal.name)
                )
                row = await _alert(connection, alert_id, principal)
                changed = True
            else:
                changed = False
        data = alert_data(row)
        if changed:
            cloud.bus.publish(Change("alert", row.store_id, {**data, "event": "acknowledged"}))
        return AlertOut(**data)

    # ------------------------------------------------------------------ availability

    async def stock(
        cloud: CloudContext, principal: Principal, gtins: list[str], stores: list[str] | None
    ) -> list[GtinAvailability]:
        """The one definition of what the online channel may sell, for every availability
        route: per store, on hand - reserved - the store's safety stock, never below 0
        (cloud/inventory/stock.py)."""
        async with cloud.engine.connect() as connection:
            found = await levels(
                connection,
                options.availability.safety_for,
                zones=options.zones,
                gtins=gtins,
                stores=stores,
            )
        per_gtin: dict[str, list[StoreStock]] = {g: [] for g in gtins}
        for (store, gtin), level in sorted(found.items()):
            if level.on_hand <= 0 or not principal.may_see(store):
                continue
            per_gtin[gtin].append(
                StoreStock(
                    store=store,
                    on_hand=level.on_hand,
                    on_hand_by_zone=level.by_zone,
                    reserved=level.reserved,
                    safety_stock=level.safety_stock,
                    available=level.available,
                    shelves=level.shelves,
                    updated_at=level.updated_at,
                )
            )
        return [
            GtinAvailability(gtin=g, available=sum(s.available for s in per), stores=per)
            for g, per in per_gtin.items()
        ]

    @router.get("/availability/{gtin}")
    async def availability(
        gtin: Annotated[str, GTIN_PATH], principal: Shopping, cloud: Cloud
    ) -> GtinAvailability:
        """What the online channel may sell of one GTIN, per store (the stores the key may
        see): the same figures as one item of the bulk `GET /availability`."""
        return (await stock(cloud, principal, [gtin], None))[0]

    @router.get("/availability")
    async def bulk_availability(
        principal: Shopping,
        cloud: Cloud,
        gtins: Annotated[str, Query(description="comma-separated GTIN-14s")],
        stores: Annotated[str | None, Query(description="comma-separated store ids")] = None,
    ) -> BulkAvailability:
        """What the webshop may sell per GTIN and store: on hand minus what open orders
        reserved minus a safety stock, so it never sells a unit twice or the last unit the
        shelf cannot find."""
        wanted = list(dict.fromkeys(g.strip() for g in gtins.split(",") if g.strip()))
        if not wanted:
            raise ApiError(422, "invalid_request", "gtins: give at least one GTIN")
        if len(wanted) > options.availability.max_gtins:
            raise ApiError(
                422,
                "invalid_request",
                f"gtins: at most {options.availability.max_gtins} per request",
            )
        bad = [g for g in wanted if not (len(g) == 14 and g.isascii() and g.isdigit())]
        if bad:
            raise ApiError(422, "invalid_request", f"gtins: not a GTIN-14: {bad[0][:20]!r}")
        store_filter = None
        if stores is not None:
            store_filter = sorted({s.strip() for s in stores.split(",") if s.strip()})
            for s in store_filter:
                principal.check_store(s)
        return BulkAvailability(items=await stock(cloud, principal, wanted, store_filter))

    @router.get(
        "/feeds/local-inventory",
        response_class=StreamingResponse,
        responses={
            200: {
                "description": "Google Merchant Center local inventory feed: a tab-delimited"
                " file (`format=tsv`) or JSON lines (`format=jsonl`)",
                "content": {"text/tab-separated-values": {}, "application/x-ndjson": {}},
            }
        },
    )
    async def local_inventory_feed(
        principal: Shopping,
        cloud: Cloud,
        format: Annotated[Literal["tsv", "jsonl"], Query()] = "tsv",
        stores: Annotated[str | None, Query(description="comma-separated store ids")] = None,
    ) -> StreamingResponse:
        """Every (store, GTIN) the stores have counted, with what the webshop may sell
        there (docs/inventory.md, "Local inventory feed")."""
        store_filter = None
        if stores is not None:
            store_filter = sorted({s.strip() for s in stores.split(",") if s.strip()})
            for s in store_filter:
                principal.check_store(s)
        rows = feed_rows(cloud.engine, options, principal.may_see, store_filter)
        media = "text/tab-separated-values" if format == "tsv" else "application/x-ndjson"
        name = f"local-inventory.{format}"
        return StreamingResponse(
            render(rows, format),
            media_type=f"{media}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    add_operations_routes(router, domain)
    return router


def _check(cloud: CloudContext, principal: Principal, store: str) -> None:
    principal.check_store(store)
    if not cloud.registry.knows_store(store):
        raise ApiError(404, "not_found", f"store {store!r} is not registered")


async def _alert(connection: AsyncConnection, alert_id: int, principal: Principal) -> Any:
    t = inventory_alerts
    row = (await connection.execute(select(t).where(t.c.id == alert_id))).first()
    if row is None or not principal.may_see(row.store_id):
        # a staff key gets the same answer for another store's alert as for none at all
        raise ApiError(404, "not_found", f"no alert {alert_id}")
    return row


def _point_row(
    store: str, gtin: str, shelf: str | None, point: int, principal: Principal, now: datetime
) -> dict[str, Any]:
    return {
        "store_id": store,
        "gtin": gtin,
        "shelf": shelf or "",
        "reorder_point": point,
        "updated_at": now,
        "updated_by": principal.name,
    }


def _plan_row(
    store: str, shelf: str, gtins: list[str], principal: Principal, now: datetime
) -> dict[str, Any]:
    return {
        "store_id": store,
        "shelf": shelf,
        "gtins": sorted(set(gtins)),
        "updated_at": now,
        "updated_by": principal.name,
    }
