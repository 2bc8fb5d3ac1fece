"""The store-operations routes: replenishment tasks and floor minimums, the POS sale feed,
reorder suggestions, book stock and the accuracy KPI (docs/inventory.md, "Store operations").

Everything here is for ops and for staff on their own stores (the store team works its
tasks, sells, counts); another store is 403, an unregistered store or unknown task 404.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import delete, select

from cloud.api.auth import Principal
from cloud.api.deps import Cloud, Reader
from cloud.api.errors import ApiError
from cloud.api.params import MAX_ROW_ID, RowIdPath
from cloud.api.timestamps import iso_utc
from cloud.bus import Change
from cloud.catalogue.csvimport import gs1_check_digit
from cloud.context import CloudContext
from cloud.inventory import accuracy, reorder
from cloud.inventory.replenish import OPEN, TASK, Minimum, close, replace_minimums, task_data
from cloud.inventory.sales import SoldItem, mark_sold
from cloud.inventory.tables import approved_differences, book_stock, replenishment_tasks
from cloud.state.db import writing
from protocols.ids import Epc, Gtin, Identifier
from protocols.messages import utc_now

if TYPE_CHECKING:
    from cloud.inventory import InventoryDomain

ALERT = "alert"
TAGS: list[str | Enum] = ["store operations"]
MAX_SALE_ITEMS = 1_000
MAX_BOOK_BYTES = 20 * 1024 * 1024
MAX_FLOOR_MINIMUM = 100_000
MAX_FLOOR_MINIMUMS = 10_000  # GTINs per store in one PUT


class TaskOut(BaseModel):
    id: int
    store: str
    kind: str = Field(description="replenish")
    gtin: str
    quantity: int = Field(
        description="units to move (the floor's shortfall, at most the backroom's)"
    )
    from_zone: str
    to_shelf: str
    status: str = Field(description="open | done")
    created_at: str
    closed_at: str | None
    closed_by: str | None = Field(description='"rfid" (the counts saw the move) or the key name')


class SaleItemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epc: Epc
    gtin: Gtin | None = Field(default=None, description="feeds the reorder suggestions")
    price: Decimal | None = Field(default=None, ge=0, le=10_000_000, decimal_places=2)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")


class SaleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sale_id: Identifier = Field(description="the POS receipt id")
    at: datetime | None = Field(default=None, description="when sold (default: now), with offset")
    items: list[SaleItemIn] = Field(min_length=1, max_length=MAX_SALE_ITEMS)


class SaleOut(BaseModel):
    sale_id: str
    items: int
    marked: int = Field(description="EPCs newly marked sold")
    already_sold: int = Field(description="EPCs an earlier sale (or this one, resent) marked")
    cleared_exit_alerts: int


def _check_digit(gtin: str) -> str:
    expected = gs1_check_digit(gtin[:-1])
    if int(gtin[-1]) != expected:
        raise ValueError(f"GTIN {gtin} has check digit {gtin[-1]}, expected {expected}")
    return gtin


CheckedGtin = Annotated[Gtin, AfterValidator(_check_digit)]


class FloorMinimumIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gtin: CheckedGtin
    minimum: int = Field(ge=0, le=MAX_FLOOR_MINIMUM, description="0: none (overrides config)")
    shelf: Identifier | None = Field(
        default=None,
        description="the floor shelf the units go to; none: the floor shelf holding the most",
    )


class FloorMinimumsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[FloorMinimumIn] = Field(max_length=MAX_FLOOR_MINIMUMS)


class FloorMinimumOut(BaseModel):
    gtin: str
    minimum: int
    shelf: str | None
    source: str = Field(description="api (set here, wins) or config (domains.inventory)")
    updated_at: str | None = None
    updated_by: str | None = None


class ApproveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gtins: list[Gtin] = Field(min_length=1, max_length=10_000)


def add_operations_routes(router: APIRouter, domain: InventoryDomain) -> None:
    """Add the routes to the inventory domain's router (their own router, included, would be
    opaque to `declare_error_responses`, so their error statuses would go undeclared)."""
    options = domain.options

    # ------------------------------------------------------------------ tasks

    @router.get("/stores/{store}/tasks", tags=TAGS)
    async def list_tasks(
        store: str,
        principal: Reader,
        cloud: Cloud,
        status: Annotated[Literal["open", "done"] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        before: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
    ) -> list[TaskOut]:
        """Replenishment tasks, newest first."""
        _check(cloud, principal, store)
        t = replenishment_tasks
        query = select(t).where(t.c.store_id == store).order_by(t.c.id.desc()).limit(limit)
        if status is not None:
            query = query.where(t.c.status == status)
        if before is not None:
            query = query.where(t.c.id < before)
        async with cloud.engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [TaskOut(**task_data(row)) for row in rows]

    @router.post("/tasks/{task_id}/done", tags=TAGS)
    async def task_done(task_id: RowIdPath, principal: Reader, cloud: Cloud) -> TaskOut:
        """Close a task by hand (idempotent: a done task stays as it was closed)."""
        t = replenishment_tasks
        async with writing(cloud.engine) as connection:
            row = (await connection.execute(select(t).where(t.c.id == task_id))).first()
            if row is None or not principal.may_see(row.store_id):
                raise ApiError(404, "not_found", f"no task {task_id}")
            changed = None
            if row.status == OPEN:
                changed = await close(connection, task_id, principal.name, utc_now())
            row = changed or (await connection.execute(select(t).where(t.c.id == task_id))).one()
        data = task_data(row)
        if changed is not None:
            cloud.bus.publish(Change(TASK, row.store_id, {**data, "event": "done"}))
        return TaskOut(**data)

    # ------------------------------------------------------------------ floor minimums

    @router.get("/stores/{store}/floor-minimums", tags=TAGS)
    async def get_floor_minimums(
        store: str, principal: Reader, cloud: Cloud
    ) -> list[FloorMinimumOut]:
        """The floor minimums in force: those set here, then the config's for the GTINs
        without one."""
        _check(cloud, principal, store)
        async with cloud.engine.connect() as connection:
            found = await domain.replenisher.minimums(connection, store)
        return [_minimum_out(m) for m in found.values()]

    @router.put("/stores/{store}/floor-minimums", tags=TAGS)
    async def put_floor_minimums(
        store: str, body: FloorMinimumsIn, principal: Reader, cloud: Cloud
    ) -> list[FloorMinimumOut]:
        """Replace every floor minimum set through the API for this store (one per GTIN;
        each wins over the config's). The store's tasks are re-evaluated at once: a
        minimum above the floor's count opens one while the backroom holds the GTIN."""
        _check(cloud, principal, store)
        gtins = [item.gtin for item in body.items]
        if len(set(gtins)) != len(gtins):
            raise ApiError(422, "invalid_request", "a GTIN is listed twice")
        now = utc_now()
        by = principal.name
        wanted = [Minimum(i.gtin, i.minimum, i.shelf, "api", now, by) for i in body.items]
        async with writing(cloud.engine) as connection:
            await replace_minimums(connection, store, wanted)
            changes = await domain.replenisher.evaluate(connection, store, None, now)
            found = await domain.replenisher.minimums(connection, store)
        for data in changes:
            cloud.bus.publish(Change(TASK, store, data))
        return [_minimum_out(m) for m in found.values()]

    # ------------------------------------------------------------------ sales

    @router.post("/stores/{store}/sales", tags=TAGS)
    async def post_sale(store: str, body: SaleIn, principal: Reader, cloud: Cloud) -> SaleOut:
        """A POS sale: its EPCs are sold (an item seen at an exit afterwards raises
        nothing). Idempotent per EPC."""
        _check(cloud, principal, store)
        epcs = [item.epc for item in body.items]
        if len(set(epcs)) != len(epcs):
            raise ApiError(422, "invalid_request", "an EPC is listed twice in the sale")
        items = [SoldItem(i.epc, i.gtin, i.price, i.currency) for i in body.items]
        async with writing(cloud.engine) as connection:
            marked, cleared = await mark_sold(
                connection,
                store,
                items,
                sale_id=body.sale_id,
                source="pos",
                at=body.at or utc_now(),
            )
        for data in cleared:
            cloud.bus.publish(Change(ALERT, store, data))
        return SaleOut(
            sale_id=body.sale_id,
            items=len(items),
            marked=marked,
            already_sold=len(items) - marked,
            cleared_exit_alerts=len(cleared),
        )

    # ------------------------------------------------------------------ reorder suggestions

    @router.get("/stores/{store}/reorder-suggestions", tags=TAGS)
    async def reorder_suggestions(store: str, principal: Reader, cloud: Cloud) -> dict[str, Any]:
        """Per GTIN: reorder point = demand during the lead time + safety stock, with every
        figure behind it; those to order first."""
        _check(cloud, principal, store)
        now = utc_now()
        async with cloud.engine.connect() as connection:
            items = await reorder.suggestions(connection, options, store, now)
        return {
            "store": store,
            "at": iso_utc(now),
            "formula": reorder.FORMULA,
            "window_days": options.reorder.window_days,
            "items": items,
        }

    # ------------------------------------------------------------------ book stock, accuracy

    @router.put("/stores/{store}/book-stock", tags=TAGS)
    async def put_book_stock(
        store: str, request: Request, principal: Reader, cloud: Cloud
    ) -> dict[str, Any]:
        """Replace the store's book stock from the POS/ERP: text/csv (`gtin,quantity,
        category`) or JSON `{"items": [...]}`. One bad line rejects the import (422, the
        lines named)."""
        _check(cloud, principal, store)
        body = await request.body()
        if len(body) > MAX_BOOK_BYTES:
            raise ApiError(413, "too_large", f"at most {MAX_BOOK_BYTES} bytes")
        try:
            lines = accuracy.parse_book(body, request.headers.get("content-type", ""))
        except accuracy.BookError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        now = utc_now()
        b = book_stock
        async with writing(cloud.engine) as connection:
            await connection.execute(delete(b).where(b.c.store_id == store))
            if lines:
                await connection.execute(
                    b.insert(),
                    [
                        {
                            "store_id": store,
                            "gtin": line.gtin,
                            "quantity": line.quantity,
                            "category": line.category,
                            "imported_at": now,
                            "imported_by": principal.name,
                        }
                        for line in lines
                    ],
                )
        return {"store": store, "gtins": len(lines), "imported_at": iso_utc(now)}

    @router.get("/stores/{store}/accuracy", tags=TAGS)
    async def get_accuracy(store: str, principal: Reader, cloud: Cloud) -> dict[str, Any]:
        """RFID count against book stock, in total and per category, with the GTINs that
        differ."""
        _check(cloud, principal, store)
        async with cloud.engine.connect() as connection:
            lines, imported = await accuracy.lines_of(connection, options, store)
        return accuracy.report(store, lines, iso_utc(imported))

    @router.post("/stores/{store}/accuracy/approve", tags=TAGS)
    async def approve(
        store: str, body: ApproveIn, principal: Reader, cloud: Cloud
    ) -> list[dict[str, Any]]:
        """Approve the current differences of these GTINs for posting to the ERP; a GTIN
        without a difference is a 422 naming it."""
        _check(cloud, principal, store)
        now = utc_now()
        async with writing(cloud.engine) as connection:
            lines, _imported = await accuracy.lines_of(connection, options, store)
            differing = {line.gtin: line for line in lines if line.difference}
            missing = [g for g in body.gtins if g not in differing]
            if missing:
                raise ApiError(
                    422, "invalid_request", f"no difference to approve for {', '.join(missing[:5])}"
                )
            rows = [
                {
                    "store_id": store,
                    "gtin": gtin,
                    "category": differing[gtin].category,
                    "rfid_count": differing[gtin].rfid,
                    "book": differing[gtin].book,
                    "difference": differing[gtin].difference,
                    "approved_at": now,
                    "approved_by": principal.name,
                }
                for gtin in sorted(set(body.gtins))
            ]
            await connection.execute(approved_differences.insert(), rows)
        return [{**_approved_view(row), "approved_at": iso_utc(now)} for row in rows]

    @router.get(
        "/stores/{store}/accuracy/approved.csv",
        tags=TAGS,
        response_class=StreamingResponse,
        responses={200: {"content": {"text/csv": {}}, "description": "approved differences"}},
    )
    async def export_approved(
        store: str,
        principal: Reader,
        cloud: Cloud,
        after: Annotated[
            int, Query(ge=0, le=MAX_ROW_ID, description="only ids above this (the last export's)")
        ] = 0,
    ) -> StreamingResponse:
        """The approved differences as CSV, oldest first, for the ERP to post."""
        _check(cloud, principal, store)
        a = approved_differences
        async with cloud.engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(a).where(a.c.store_id == store, a.c.id > after).order_by(a.c.id)
                )
            ).all()
        return StreamingResponse(
            _csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="approved-{store}.csv"'},
        )


EXPORT_COLUMNS = (
    "id",
    "store",
    "gtin",
    "category",
    "rfid_count",
    "book",
    "difference",
    "approved_at",
    "approved_by",
)


def _approved_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "store": row["store_id"],
        "gtin": row["gtin"],
        "category": _cell(row["category"]),
        "rfid_count": row["rfid_count"],
        "book": row["book"],
        "difference": row["difference"],
        "approved_by": row["approved_by"],
    }


def _minimum_out(m: Minimum) -> FloorMinimumOut:
    return FloorMinimumOut(
        gtin=m.gtin,
        minimum=m.minimum,
        shelf=m.shelf,
        source=m.source,
        updated_at=iso_utc(m.updated_at),
        updated_by=m.updated_by,
    )


def _cell(text: str) -> str:
    """A spreadsheet must not run an imported category as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


async def _csv(rows: Sequence[Any]) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for row in rows:
        m = row._mapping
        view = _approved_view(dict(m))
        writer.writerow(
            [
                m["id"],
                *(view[c] for c in EXPORT_COLUMNS[1:7]),
                iso_utc(m["approved_at"]),
                m["approved_by"],
            ]
        )
    yield buffer.getvalue()


def _check(cloud: CloudContext, principal: Principal, store: str) -> None:
    principal.check_store(store)
    if not cloud.registry.knows_store(store):
        raise ApiError(404, "not_found", f"store {store!r} is not registered")
