"""The lockers API: the online channel orders and collects codes; staff run the lockers.

Online channel (role shopper_app, or ops):
- `POST /api/v1/stores/{store}/orders`, `GET /api/v1/orders/{id}`;
- `POST /api/v1/orders/{id}/pickup-code`: the code, once, when the order is ready.

Staff (their stores) and ops:
- `POST /api/v1/orders/{id}/state` (picking, staged, cancelled, exception, returned_to_stock);
- `POST /api/v1/orders/{id}/assign`: reserve a compartment;
- `GET /api/v1/stores/{store}/lockers` (compartments), `.../lockers/assignments` (what to
  load where), `.../lockers/alarms`, `.../lockers/commands`, `.../lockers/kpis`,
  `GET /api/v1/orders/{id}/notifications`;
- `POST /api/v1/stores/{store}/lockers/{bank}/{compartment}/open-for-loading`, `.../open`,
  `.../out-of-service`.

Illegal order transitions answer 409 with the current state and what it allows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import Row, insert, select

from cloud.api.auth import Principal
from cloud.api.deps import Reader, ShopperApp, Shopping
from cloud.api.errors import ApiError, error_responses
from cloud.inventory import stock
from cloud.lockers import commands, intake, kpis, orders, tables
from cloud.lockers import returns as locker_returns
from cloud.lockers.domain import AssignmentError, BankKeyChangedError, LockersDomain
from cloud.lockers.items import returns_of
from cloud.lockers.machine import IllegalTransitionError, OrderState
from cloud.lockers.picks import view as picked_view
from cloud.lockers.views import iso
from protocols.ids import IDENTIFIER_PATTERN
from protocols.messages import new_message_id, utc_now

S = OrderState
Ident = Annotated[str, Field(pattern=IDENTIFIER_PATTERN)]


class OrderLine(BaseModel):
    gtin: str = Field(pattern=r"^[0-9]{14}$")
    quantity: int = Field(default=1, ge=1, le=1000)


class OrderIn(BaseModel):
    items: list[OrderLine] = Field(min_length=1, max_length=200)
    shopper: Ident | None = Field(
        default=None, description="the shopper app's inbox (from its broker login)"
    )


class StateIn(BaseModel):
    state: Literal["picking", "staged", "cancelled", "exception", "returned_to_stock"]
    reason: str | None = Field(default=None, max_length=500)


class AssignIn(BaseModel):
    bank: Ident | None = None
    compartment: Ident | None = None


class OutOfServiceIn(BaseModel):
    out: bool = True


def build_router(domain: LockersDomain) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["lockers"])

    async def order_or_404(tx: Any, order_id: str, principal: Principal) -> Row[Any]:
        order = await orders.load(tx, order_id)
        if order is None or not principal.may_see(order.store_id):
            raise ApiError(404, "not_found", f"order {order_id!r} does not exist")
        return order

    def check_bank(store: str, bank: str) -> None:
        if (store, bank) not in domain.banks:
            raise ApiError(404, "not_found", f"store {store!r} has no locker bank {bank!r}")

    @router.post("/stores/{store}/orders", status_code=201)
    async def create_order(store: str, body: OrderIn, principal: ShopperApp) -> dict[str, Any]:
        """The online channel places a BOPIS order for pickup at `store`."""
        if not any(s == store for s, _ in domain.banks):
            raise ApiError(404, "not_found", f"store {store!r} has no locker banks")
        now = utc_now()
        order_id = new_message_id()
        async with domain.transaction() as tx:
            if domain.options.reserve_stock:
                # First statement of the transaction: it takes the write lock (cloud/inventory/
                # stock.py), so the order and its reservation commit together or not at all.
                try:
                    await stock.reserve(
                        tx.connection,
                        order_id=order_id,
                        store=store,
                        wanted=stock.quantities(line.model_dump() for line in body.items),
                        safety_stock=domain.safety_stock_for(store),
                        at=now,
                    )
                except stock.InsufficientStockError as exc:
                    raise ApiError(409, "insufficient_stock", str(exc)) from None
            await tx.connection.execute(
                insert(tables.orders).values(
                    order_id=order_id,
                    store_id=store,
                    state=S.CREATED.value,
                    shopper=body.shopper,
                    items=[line.model_dump() for line in body.items],
                    created_at=now,
                    updated_at=now,
                )
            )
            order = await orders.load(tx, order_id)
            assert order is not None
            await orders.record_created(tx, order)
        return {"order_id": order_id, "store": store, "state": S.CREATED.value}

    @router.get("/orders/{order_id}")
    async def get_order(order_id: str, principal: Shopping) -> dict[str, Any]:
        async with domain.transaction() as tx:
            order = await order_or_404(tx, order_id, principal)
            t = tables.transitions
            steps = (
                await tx.connection.execute(
                    select(t).where(t.c.order_id == order_id).order_by(t.c.at, t.c.id)
                )
            ).all()
            details = await intake.intake_of(tx.connection, order_id)
            picked = await picked_view(tx.connection, order)
            returned = await returns_of(tx.connection, order_id)
            in_lockers = await locker_returns.of_order(tx.connection, order_id)
        return {
            **intake.summary(order, details, domain.options.reserve_stock),
            "picked": picked,
            "code_issued": order.code_issued_at is not None,
            "returns": returned,
            "locker_returns": in_lockers,
            "return_status": locker_returns.status_of(in_lockers),
            "transitions": [
                {"from": s.from_state, "to": s.to_state, "cause": s.cause, "at": iso(s.at)}
                for s in steps
            ],
        }

    @router.post("/orders/{order_id}/pickup-code", responses=error_responses(409))
    async def pickup_code(order_id: str, principal: ShopperApp) -> dict[str, Any]:
        """The code for the shopper, handed out ONCE when the parcel is ready (the cloud
        derives it from the bank's key and keeps neither it nor a hash of it). Ask again
        and you get 409."""
        async with domain.transaction() as tx:
            order = await order_or_404(tx, order_id, principal)
            if order.state != S.READY_FOR_PICKUP.value:
                raise ApiError(
                    409, "conflict", f"order {order_id} is {order.state}, not ready_for_pickup"
                )
            if order.code_issued_at is not None:
                raise ApiError(
                    409,
                    "conflict",
                    f"the pickup code of order {order_id} was already issued at"
                    f" {iso(order.code_issued_at)}",
                )
            try:
                code, qr = domain.pickup_code(order)
            except BankKeyChangedError as exc:
                raise ApiError(409, "conflict", str(exc)) from None
            await orders.update_fields(tx, order_id, code_issued_at=utc_now())
        return {
            "order_id": order_id,
            "code": code,
            "qr": qr,
            "bank": order.bank,
            "compartment": order.compartment,
            "expires_at": iso(order.hold_until),
        }

    @router.post("/orders/{order_id}/state", responses=error_responses(409))
    async def set_state(order_id: str, body: StateIn, principal: Reader) -> dict[str, Any]:
        """Staff move an order by hand: picking, staged, cancelled, exception, returned."""
        async with domain.transaction() as tx:
            order = await order_or_404(tx, order_id, principal)
            target = S(body.state)
            values: dict[str, Any] = {}
            if target in (S.EXCEPTION, S.CANCELLED):
                values["reason"] = body.reason
            if target is S.STAGED and order.state == S.EXCEPTION.value:
                # a retry: the failed assignment is forgotten
                values |= {"bank": None, "compartment": None, "node_id": None, "reason": None}
            try:
                await orders.move(
                    tx,
                    domain.notifier,
                    order,
                    target,
                    f"staff:{principal.name}",
                    utc_now(),
                    **values,
                )
            except IllegalTransitionError as exc:
                raise ApiError(409, "illegal_transition", str(exc)) from None
        return {"order_id": order_id, "state": target.value}

    @router.post("/orders/{order_id}/assign", status_code=202, responses=error_responses(409))
    async def assign(order_id: str, body: AssignIn, principal: Reader) -> dict[str, Any]:
        """Reserve a compartment for a staged order (`locker.reserve`); the order becomes
        `assigned` when the edge acks."""
        async with domain.transaction() as tx:
            order = await order_or_404(tx, order_id, principal)
            try:
                bank, compartment = await domain.assign(tx, order, body.bank, body.compartment)
            except IllegalTransitionError as exc:
                raise ApiError(409, "illegal_transition", str(exc)) from None
            except AssignmentError as exc:
                raise ApiError(409, "no_compartment", str(exc)) from None
        return {"order_id": order_id, "bank": bank, "compartment": compartment, "state": "staged"}

    @router.get("/orders/{order_id}/notifications")
    async def notifications(order_id: str, principal: Reader) -> list[dict[str, Any]]:
        async with domain.transaction() as tx:
            await order_or_404(tx, order_id, principal)
            n = tables.notifications
            rows = (
                await tx.connection.execute(
                    select(n).where(n.c.order_id == order_id).order_by(n.c.id)
                )
            ).all()
        return [
            {
                "id": r.id,
                "channel": r.channel,
                "state": r.payload.get("state"),
                "status": r.status,
                "attempts": r.attempts,
                "last_error": r.last_error,
                "next_at": iso(r.next_at) if r.status == "pending" else None,
                "updated_at": iso(r.updated_at),
            }
            for r in rows
        ]

    # ------------------------------------------------------------------ lockers

    @router.get("/stores/{store}/lockers")
    async def compartments(store: str, principal: Reader) -> list[dict[str, Any]]:
        principal.check_store(store)
        c = tables.compartments
        async with domain.transaction() as tx:
            rows = (
                await tx.connection.execute(
                    select(c).where(c.c.store_id == store).order_by(c.c.bank, c.c.compartment)
                )
            ).all()
        return [
            {
                "bank": r.bank,
                "compartment": r.compartment,
                "state": r.state,
                "door_open": r.door_open,
                "occupied": r.occupied,
                "flags": r.flags,
                "order_ref": r.order_ref,
                "updated_at": iso(r.updated_at),
            }
            for r in rows
        ]

    @router.get("/stores/{store}/lockers/assignments")
    async def assignments(store: str, principal: Reader) -> list[dict[str, Any]]:
        """What to load where: orders with a compartment that still waits for its parcel."""
        principal.check_store(store)
        o = tables.orders
        async with domain.transaction() as tx:
            rows = (
                await tx.connection.execute(
                    select(o)
                    .where(
                        o.c.store_id == store,
                        o.c.state.in_([S.STAGED.value, S.ASSIGNED.value]),
                        o.c.compartment.is_not(None),
                    )
                    .order_by(o.c.bank, o.c.compartment)
                )
            ).all()
        return [
            {
                "order_id": r.order_id,
                "state": r.state,
                "bank": r.bank,
                "compartment": r.compartment,
                "items": r.items,
                "hold_until": iso(r.hold_until),
            }
            for r in rows
        ]

    @router.get("/stores/{store}/lockers/alarms")
    async def alarms(
        store: str,
        principal: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        principal.check_store(store)
        a = tables.alarms
        async with domain.transaction() as tx:
            rows = (
                await tx.connection.execute(
                    select(a).where(a.c.store_id == store).order_by(a.c.id.desc()).limit(limit)
                )
            ).all()
        return [
            {
                "id": r.id,
                "bank": r.bank,
                "compartment": r.compartment,
                "kind": r.kind,
                "order_id": r.order_id,
                "at": iso(r.at),
            }
            for r in rows
        ]

    @router.get("/stores/{store}/lockers/commands")
    async def sent_commands(
        store: str,
        principal: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """The commands sent to the store's lockers and how the edge answered."""
        principal.check_store(store)
        t = tables.commands
        async with domain.transaction() as tx:
            rows = (
                await tx.connection.execute(
                    select(t).where(t.c.store_id == store).order_by(t.c.seq.desc()).limit(limit)
                )
            ).all()
        return [
            {
                "correlation_id": r.correlation_id,
                "name": r.name,
                "bank": r.bank,
                "compartment": r.compartment,
                "order_id": r.order_id,
                "status": r.status,
                "reason": r.reason,
                "sent_at": iso(r.sent_at),
                "updated_at": iso(r.updated_at),
            }
            for r in rows
        ]

    async def locker_command(
        store: str,
        bank: str,
        compartment: str,
        principal: Principal,
        name: str,
        args: dict[str, Any],
    ) -> dict[str, Any]:
        principal.check_store(store)
        check_bank(store, bank)
        node = domain.banks[(store, bank)].node
        async with domain.transaction() as tx:
            order = await orders.in_compartment(tx, store, bank, compartment)
            command = await commands.send(
                tx,
                store=store,
                node=node,
                bank=bank,
                compartment=compartment,
                name=name,
                args=args,
                expiry_s=domain.options.command_expiry_s,
                order_id=order.order_id if order else None,
            )
        return {"correlation_id": command.correlation_id, "name": name, "status": "sent"}

    @router.post("/stores/{store}/lockers/{bank}/{compartment}/open-for-loading", status_code=202)
    async def open_for_loading(
        store: str, bank: str, compartment: str, principal: Reader
    ) -> dict[str, Any]:
        return await locker_command(
            store, bank, compartment, principal, commands.OPEN_FOR_LOADING, {}
        )

    @router.post("/stores/{store}/lockers/{bank}/{compartment}/open", status_code=202)
    async def staff_open(
        store: str, bank: str, compartment: str, principal: Reader
    ) -> dict[str, Any]:
        """Staff open (any state; acknowledges a forced_open flag)."""
        return await locker_command(store, bank, compartment, principal, commands.OPEN, {})

    @router.post("/stores/{store}/lockers/{bank}/{compartment}/out-of-service", status_code=202)
    async def out_of_service(
        store: str, bank: str, compartment: str, body: OutOfServiceIn, principal: Reader
    ) -> dict[str, Any]:
        return await locker_command(
            store, bank, compartment, principal, commands.OUT_OF_SERVICE, {"out": body.out}
        )

    @router.get("/stores/{store}/lockers/kpis")
    async def locker_kpis(
        store: str,
        principal: Reader,
        since: Annotated[datetime | None, Query(description="default: 24 h before until")] = None,
        until: Annotated[datetime | None, Query(description="default: now")] = None,
    ) -> dict[str, Any]:
        principal.check_store(store)
        end = until or utc_now()
        if (since is not None and since.tzinfo is None) or end.tzinfo is None:
            raise ApiError(422, "invalid_request", "since/until need a timezone (e.g. Z)")
        try:
            start = since or end - timedelta(hours=24)
            start, end = start.astimezone(UTC), end.astimezone(UTC)
        except OverflowError:  # e.g. until=0001-01-01T00:00Z: no 24 h before it
            raise ApiError(422, "invalid_request", "since/until out of range") from None
        if start >= end:
            raise ApiError(422, "invalid_request", "since must be before until")
        async with domain.transaction() as tx:
            return await kpis.compute(tx.connection, store, start, end)

    return router
