"""The orders API (docs/orders.md): intake, the order webhook, lists, pick lists, the
lifecycle actions for every pickup method, and returns.

Online channel (shopper_app, or ops): `POST /api/v1/orders`; shoppers may also `cancel`,
`extend`, check in (`arrived`) and register `returns`. The platform's webhook
`POST /api/v1/webhooks/orders` is authenticated by its HMAC signature, not by a key.
Staff (their stores) and ops: lists, pick lists, `pick`, `stage`, `ready`, `collect`.
"""

from __future__ import annotations

import hmac
import json
from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import Row, func, insert, select, update

from cloud.api.auth import Principal
from cloud.api.deps import Reader, ShopperApp, Shopping
from cloud.api.errors import ApiError, error_responses
from cloud.config import Role
from cloud.inventory.config import BACKROOM, EXIT, SALES_FLOOR
from cloud.lockers import holds, intake, orders, picks, tables
from cloud.lockers.domain import AssignmentError, LockersDomain
from cloud.lockers.intake import (
    IntakeConflictError,
    IntakeRefusedError,
    OrderIntake,
    OrderWebhook,
    PickupMethod,
)
from cloud.lockers.items import returns_of
from cloud.lockers.machine import STATUSES, IllegalTransitionError, OrderState, states_of
from cloud.lockers.views import as_utc
from cloud.signing import SIGNATURE_HEADER, signature
from cloud.state import schema
from protocols.ids import IDENTIFIER_PATTERN
from protocols.messages import utc_now
from protocols.pickup import Grant, key_check

S = OrderState
Ident = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]
_WEBHOOK_MAX_BYTES = 256 * 1024
_PICK_EPCS_MAX = 1000  # EPCs read per line for a pick list


class StageIn(BaseModel):
    method: PickupMethod | None = Field(default=None, description="default: as ordered")
    bank: Ident | None = None
    compartment: Ident | None = None
    epcs: list[Annotated[str, Field(min_length=1, max_length=128)]] | None = Field(
        default=None,
        max_length=picks.MAX_PICKED,
        description="the EPCs staff scanned (sold when the order is collected); none: not"
        " recorded, and the order's `picked` says so",
    )


class CancelIn(BaseModel):
    reason: str | None = Field(default=None, max_length=500)


class ExtendIn(BaseModel):
    hours: float = Field(gt=0, le=24 * 14, description="added to the hold's end")


class ArrivedIn(BaseModel):
    note: str | None = Field(default=None, max_length=200, description="e.g. bay 3, red car")


class ReturnItemIn(BaseModel):
    epc: str = Field(min_length=1, max_length=128)
    condition: Literal["resellable", "damaged"] = "resellable"


class ReturnIn(BaseModel):
    method: Literal["counter", "locker"] = "counter"
    bank: Ident | None = None
    compartment: Ident | None = None
    items: list[ReturnItemIn] = Field(min_length=1, max_length=200)


def add_order_routes(router: APIRouter, domain: LockersDomain) -> None:
    """Add the orders routes to the lockers domain's router (its prefix: /api/v1)."""

    async def load_or_404(tx: Any, order_id: str, principal: Principal) -> Row[Any]:
        order = await orders.load(tx, order_id)
        if order is None or not principal.may_see(order.store_id):
            raise ApiError(404, "not_found", f"order {order_id!r} does not exist")
        return order

    async def view(tx: Any, order_id: str) -> dict[str, Any]:
        order = await orders.load(tx, order_id)
        assert order is not None
        details = await intake.intake_of(tx.connection, order_id)
        shown = intake.summary(order, details, domain.options.reserve_stock)
        return {**shown, "picked": await picks.view(tx.connection, order)}

    async def method_of(tx: Any, order_id: str) -> str:
        return intake.method_of(await intake.intake_of(tx.connection, order_id))

    async def move(tx: Any, order: Row[Any], target: S, cause: str, **values: Any) -> None:
        try:
            await orders.move(tx, domain.notifier, order, target, cause, utc_now(), **values)
        except IllegalTransitionError as exc:
            raise ApiError(409, "illegal_transition", str(exc)) from None

    async def placed(body: OrderIntake, source: str, response: Response) -> dict[str, Any]:
        try:
            shown, new = await intake.place(domain, body, source)
        except IntakeConflictError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except IntakeRefusedError as exc:
            raise ApiError(409, exc.code, str(exc)) from None
        response.status_code = 201 if new else 200
        return shown

    # ------------------------------------------------------------------ intake

    @router.post("/orders", status_code=201, responses=error_responses(409))
    async def place_order(
        body: OrderIntake, principal: ShopperApp, response: Response
    ) -> dict[str, Any]:
        """Place an order from the online channel: 201 with the order (its lines reserved),
        200 with the same order when this `external_id` was placed with the same request,
        409 when it was placed with a different one (or stock is short)."""
        return await placed(body, "api", response)

    @router.post("/webhooks/orders", status_code=201, responses=error_responses(401, 409))
    async def order_webhook(request: Request, response: Response) -> dict[str, Any]:
        """The platform's `orders/create` webhook (docs/orders.md), signed
        `X-Storegate-Signature: sha256=<hex HMAC of the body>` with the configured secret.
        Mapped to the same intake as `POST /api/v1/orders` (idempotent on the order id)."""
        raw = await request.body()
        secret = domain.intake_secret
        given = request.headers.get(SIGNATURE_HEADER, "")
        if secret is None:
            raise ApiError(
                401,
                "unauthorized",
                "the order webhook has no secret (domains.lockers.intake_webhook_secret_env)",
            )
        if not hmac.compare_digest(given.encode(), signature(secret, raw).encode()):
            raise ApiError(401, "unauthorized", f"missing or wrong {SIGNATURE_HEADER}")
        if len(raw) > _WEBHOOK_MAX_BYTES:
            raise ApiError(413, "too_large", f"webhook body over {_WEBHOOK_MAX_BYTES} bytes")
        try:
            body = OrderWebhook.model_validate(json.loads(raw)).intake()
        except (ValueError, ValidationError) as exc:
            detail = exc.errors()[0] if isinstance(exc, ValidationError) else str(exc)
            raise ApiError(422, "invalid_request", f"not an order webhook: {detail}") from None
        return await placed(body, "webhook", response)

    # ------------------------------------------------------------------ reading

    @router.get("/orders")
    async def list_orders(
        principal: Reader,
        store: Annotated[str | None, Query(description="required for staff keys")] = None,
        status: Annotated[str | None, Query(description=", ".join(STATUSES))] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Orders, newest first."""
        if store is not None:
            principal.check_store(store)
        elif principal.role is Role.STAFF:
            raise ApiError(422, "invalid_request", "store is required for a staff key")
        o, i = tables.orders, tables.order_intake
        query = select(o, *[c for c in i.c if c.name != "order_id"]).select_from(
            o.outerjoin(i, i.c.order_id == o.c.order_id)
        )
        if store is not None:
            query = query.where(o.c.store_id == store)
        if status is not None:
            if status not in STATUSES:
                raise ApiError(
                    422, "invalid_request", f"status {status!r}: one of {', '.join(STATUSES)}"
                )
            query = query.where(o.c.state.in_(states_of(status)))
            if status in ("placed", "reserved"):
                reserved = status == "reserved"
                query = query.where(
                    func.coalesce(i.c.reserved, domain.options.reserve_stock) == reserved
                )
        async with domain.transaction() as tx:
            rows = (await tx.connection.execute(query.order_by(o.c.seq.desc()).limit(limit))).all()
        out = []
        for row in rows:
            details = row if row.method is not None else None  # None: no intake row
            out.append(intake.summary(row, details, domain.options.reserve_stock))
        return out

    @router.get("/orders/{order_id}/pick-list")
    async def pick_list(order_id: str, principal: Reader) -> dict[str, Any]:
        """Where to take each line from: the shelves RFID last saw the GTIN on, each with
        its zone (`domains.inventory.zones`), and which EPCs to take (as many as the line
        wants): sales-floor shelves first, then the backroom, then any other zone, an exit
        last; within a zone the fullest shelves first."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            lines = [
                await _pick_line(tx.connection, order.store_id, str(gtin), quantity, domain.zone_of)
                for gtin, quantity in _lines(order.items).items()
            ]
        return {"order_id": order_id, "store": order.store_id, "lines": lines}

    # ------------------------------------------------------------------ lifecycle

    @router.post("/orders/{order_id}/pick", responses=error_responses(409))
    async def pick(order_id: str, principal: Reader) -> dict[str, Any]:
        """Staff start picking (the pick list says what and where)."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            await move(tx, order, S.PICKING, f"staff:{principal.name}")
            return await view(tx, order_id)

    @router.post("/orders/{order_id}/stage", responses=error_responses(409))
    async def stage(order_id: str, body: StageIn, principal: Reader) -> dict[str, Any]:
        """The goods are picked and packed. A locker order gets its compartment here
        (`locker.reserve`; it is `assigned` when the edge acks); counter and curbside
        orders wait for `ready`. `method` changes the pickup method. `epcs`: the items
        scanned, each checked against the order and the store (409 `pick_refused` names
        the EPC and why); they are sold when the order is collected."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            method = body.method or await method_of(tx, order_id)
            if method == "locker" and not any(s == order.store_id for s, _ in domain.banks):
                raise ApiError(409, "no_locker", f"store {order.store_id!r} has no locker banks")
            values: dict[str, Any] = {}
            if order.state == S.EXCEPTION.value:
                values = {"bank": None, "compartment": None, "node_id": None, "reason": None}
            await move(tx, order, S.STAGED, f"staff:{principal.name}", **values)
            if body.epcs is not None:
                try:
                    await picks.record(tx.connection, order, body.epcs, principal.name, utc_now())
                except picks.PickRefusedError as exc:
                    raise ApiError(409, "pick_refused", str(exc)) from None
            await _set_method(tx, order_id, method, domain.options.reserve_stock)
            if method == "locker":
                staged = await orders.load(tx, order_id)
                assert staged is not None
                try:
                    await domain.assign(tx, staged, body.bank, body.compartment)
                except AssignmentError as exc:
                    raise ApiError(409, "no_compartment", str(exc)) from None
            return await view(tx, order_id)

    @router.post("/orders/{order_id}/ready", responses=error_responses(409))
    async def ready(order_id: str, principal: Reader) -> dict[str, Any]:
        """A counter or curbside order is ready to hand over (the shopper is notified);
        it is held `hold_hours`. Locker orders become ready when loaded."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            if await method_of(tx, order_id) == "locker":
                raise ApiError(
                    409,
                    "conflict",
                    f"order {order_id} is a locker order: it is ready when its parcel is loaded"
                    " and the locker has its code",
                )
            hold = utc_now() + timedelta(hours=domain.options.hold_hours)
            await move(tx, order, S.READY_FOR_PICKUP, f"staff:{principal.name}", hold_until=hold)
            return await view(tx, order_id)

    @router.post("/orders/{order_id}/collect", responses=error_responses(409))
    async def collect(order_id: str, principal: Reader) -> dict[str, Any]:
        """Staff hand a counter or curbside order over (a locker reports its own)."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            if await method_of(tx, order_id) == "locker":
                raise ApiError(
                    409, "conflict", f"order {order_id} is a locker order: the locker reports it"
                )
            if order.state not in (S.READY_FOR_PICKUP.value, S.EXPIRED.value):
                raise ApiError(
                    409, "illegal_transition", f"order {order_id} is {order.state}, not ready"
                )
            await move(tx, order, S.COLLECTED, f"handed_over:{principal.name}")
            return await view(tx, order_id)

    @router.post("/orders/{order_id}/cancel", responses=error_responses(409))
    async def cancel(order_id: str, body: CancelIn, principal: Shopping) -> dict[str, Any]:
        """Cancel (staff or shopper) until collected: the reservation is released and a
        compartment held for it is released at the edge (`locker.release`)."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            await move(
                tx,
                order,
                S.CANCELLED,
                f"cancelled:{principal.name}",
                reason=body.reason or f"cancelled by {principal.role.value} {principal.name}",
            )
            await holds.release(tx, domain, order)
            return await view(tx, order_id)

    @router.post("/orders/{order_id}/extend", responses=error_responses(409))
    async def extend(order_id: str, body: ExtendIn, principal: Shopping) -> dict[str, Any]:
        """Hold a ready order longer. A locker order's code is derived from its hold's end,
        so it gets a new code (fetch it again from pickup-code); the edge gets the new
        hold (`locker.hold`)."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            if order.state not in (S.ASSIGNED.value, S.READY_FOR_PICKUP.value):
                raise ApiError(
                    409, "illegal_transition", f"order {order_id} is {order.state}: no hold"
                )
            until = as_utc(order.hold_until) + timedelta(hours=body.hours)
            values: dict[str, Any] = {"hold_until": until, "updated_at": utc_now()}
            locker = order.compartment is not None and order.node_id is not None
            args: dict[str, Any] = {"order_ref": order_id, "expiry": until.isoformat()}
            if locker:
                grant = Grant.make(order.bank, order.compartment, order.seq, until)
                values["code_hash"] = key_check(domain.key_of(order.store_id, order.bank), grant)
                if order.state == S.READY_FOR_PICKUP.value:
                    args["order_seq"] = order.seq
                    values["code_issued_at"] = None  # a new code to hand out
            await orders.update_fields(tx, order_id, **values)
            if locker:
                await holds.send_hold(tx, domain, order, args)
            tx.change("order", order.store_id, {**await view(tx, order_id), "cause": "extended"})
            return await view(tx, order_id)

    @router.post("/orders/{order_id}/arrived", responses=error_responses(409))
    async def arrived(order_id: str, body: ArrivedIn, principal: Shopping) -> dict[str, Any]:
        """Curbside check-in: the shopper is outside; staff see it live and hand over."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            if await method_of(tx, order_id) != "curbside":
                raise ApiError(409, "conflict", f"order {order_id} is not a curbside order")
            if S(order.state) not in (S.CREATED, S.PICKING, S.STAGED, S.READY_FOR_PICKUP):
                raise ApiError(409, "conflict", f"order {order_id} is {order.state}")
            i = tables.order_intake
            await tx.connection.execute(
                update(i)
                .where(i.c.order_id == order_id)
                .values(arrived_at=utc_now(), arrival_note=body.note)
            )
            shown = await view(tx, order_id)
            tx.change("order", order.store_id, {**shown, "cause": "arrived"})
            return shown

    # ------------------------------------------------------------------ returns

    @router.post("/orders/{order_id}/returns", status_code=201, responses=error_responses(409))
    async def register_return(
        order_id: str, body: ReturnIn, principal: Shopping
    ) -> list[dict[str, Any]]:
        """Items of a collected order coming back, at the counter or into a locker
        compartment. Each stays `expected` until RFID reads its EPC in the store; then it
        is `received` (back in stock) or `damaged` (on hand, never available)."""
        async with domain.transaction() as tx:
            order = await load_or_404(tx, order_id, principal)
            if order.state != S.COLLECTED.value:
                raise ApiError(
                    409, "conflict", f"order {order_id} is {order.state}: only collected returns"
                )
            if body.method == "locker":
                if body.bank is None or body.compartment is None:
                    raise ApiError(
                        422, "invalid_request", "a locker return needs bank and compartment"
                    )
                if (order.store_id, body.bank) not in domain.banks:
                    raise ApiError(
                        409, "conflict", f"store {order.store_id} has no locker bank {body.bank}"
                    )
            r = tables.order_returns
            epcs = [item.epc for item in body.items]
            if len(set(epcs)) != len(epcs):
                raise ApiError(422, "invalid_request", "an EPC is listed twice")
            known = (
                (
                    await tx.connection.execute(
                        select(r.c.epc).where(r.c.order_id == order_id, r.c.epc.in_(epcs))
                    )
                )
                .scalars()
                .all()
            )
            if known:
                raise ApiError(
                    409, "conflict", f"already returned on order {order_id}: {', '.join(known)}"
                )
            ordered = sum(_lines(order.items).values())
            before = (
                await tx.connection.execute(
                    select(func.count()).select_from(r).where(r.c.order_id == order_id)
                )
            ).scalar_one()
            if before + len(epcs) > ordered:
                raise ApiError(
                    409,
                    "conflict",
                    f"order {order_id} had {ordered} unit(s); {before} already returned",
                )
            now = utc_now()
            await tx.connection.execute(
                insert(r),
                [
                    {
                        "order_id": order_id,
                        "store_id": order.store_id,
                        "epc": item.epc,
                        "method": body.method,
                        "bank": body.bank,
                        "compartment": body.compartment,
                        "condition": item.condition,
                        "status": "expected",
                        "created_at": now,
                    }
                    for item in body.items
                ],
            )
            return await returns_of(tx.connection, order_id)


def _lines(items: list[dict[str, Any]]) -> dict[str, int]:
    wanted: dict[str, int] = defaultdict(int)
    for line in items:
        wanted[str(line["gtin"])] += int(line.get("quantity", 1))
    return dict(wanted)


async def _set_method(tx: Any, order_id: str, method: str, reserved: bool) -> None:
    i = tables.order_intake
    done = await tx.connection.execute(
        update(i).where(i.c.order_id == order_id).values(method=method)
    )
    if done.rowcount == 0:  # an order from the older per-store route
        await tx.connection.execute(
            insert(i).values(
                order_id=order_id,
                external_id=None,
                request_hash="",
                source="store_route",
                method=method,
                reserved=reserved,
            )
        )


# the zones staff take from, in the order they should (cloud/inventory/config.py)
_ZONE_RANK = {SALES_FLOOR: 0, BACKROOM: 1}
_LAST = 3  # an exit: the item is on its way out


async def _pick_line(
    connection: Any, store: str, gtin: str, quantity: int, zone_of: picks.ZoneOf
) -> dict[str, Any]:
    e, r, inv = tables.epc_locations, tables.order_returns, schema.inventory
    damaged = select(r.c.epc).where(r.c.store_id == store, r.c.status == "damaged")
    seen = (
        await connection.execute(
            select(e.c.shelf, e.c.epc, e.c.epc.in_(picks.held(store)).label("held"))
            .where(
                e.c.store_id == store,
                e.c.gtin == gtin,
                e.c.departed_at.is_(None),
                e.c.epc.not_in(damaged),
            )
            .order_by(e.c.shelf, e.c.epc)
            .limit(_PICK_EPCS_MAX)
        )
    ).all()
    by_shelf: dict[str, list[str]] = defaultdict(list)
    held: dict[str, int] = defaultdict(int)  # picked for another order, back on a shelf
    for shelf, epc, is_held in seen:
        if is_held:
            held[shelf] += 1
        else:
            by_shelf[shelf].append(epc)
    counts = {
        shelf: int(count) - held[shelf]
        for shelf, count in await connection.execute(
            select(inv.c.shelf, inv.c["count"]).where(
                inv.c.store_id == store, inv.c.gtin == gtin, inv.c["count"] > 0
            )
        )
        if int(count) > held[shelf]
    }
    zones = {shelf: zone_of(store, shelf) for shelf in set(by_shelf) | set(counts)}
    # sales floor before backroom (the floor is where the shopper would have taken it),
    # then the fullest shelves first (fewer stops), then those whose EPCs RFID has seen
    shelves = sorted(
        zones,
        key=lambda s: (
            _LAST if zones[s] == EXIT else _ZONE_RANK.get(zones[s], 2),
            -max(len(by_shelf.get(s, [])), counts.get(s, 0)),
            -len(by_shelf.get(s, [])),
            s,
        ),
    )
    locations = []
    left = quantity
    for shelf in shelves:
        if left <= 0:
            break
        take = by_shelf.get(shelf, [])[:left]
        on_shelf = max(counts.get(shelf, 0), len(by_shelf.get(shelf, [])))
        locations.append({"shelf": shelf, "zone": zones[shelf], "on_shelf": on_shelf, "epcs": take})
        left -= len(take) if take else min(left, on_shelf)
    return {
        "gtin": gtin,
        "quantity": quantity,
        "short": max(0, left),
        "locations": locations,
    }
