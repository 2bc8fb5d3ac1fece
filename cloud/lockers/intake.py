"""Orders from the online channel: the intake request, its webhook form, and placing it.

An order is placed once per `external_id` (the platform's order id). The same request again
(same canonical body, e.g. a retried POST or a redelivered webhook) answers with the order
already placed; a different body under the same id is refused (409) with what differs.
The reservation of the order's lines is taken in the transaction that records the order
(cloud/inventory/stock.py), so an order exists only with its units reserved.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Row, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.inventory import stock
from cloud.lockers import orders, tables
from cloud.lockers.machine import OrderState, status_of
from cloud.lockers.views import iso
from protocols.ids import IDENTIFIER_PATTERN
from protocols.messages import new_message_id, utc_now

if TYPE_CHECKING:
    from cloud.lockers.domain import LockersDomain

PickupMethod = Literal["locker", "counter", "curbside"]


class IntakeLine(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gtin: str = Field(pattern=r"^[0-9]{14}$")
    quantity: int = Field(default=1, ge=1, le=1000)


class OrderIntake(BaseModel):
    """`POST /api/v1/orders`: an order as the online channel's platform has it."""

    model_config = ConfigDict(extra="forbid")

    external_id: str = Field(
        min_length=1, max_length=128, description="the platform's order id (idempotency key)"
    )
    store: str = Field(pattern=IDENTIFIER_PATTERN)
    lines: list[IntakeLine] = Field(min_length=1, max_length=200)
    method: PickupMethod = Field(default="locker", description="the pickup method")
    contact: str | None = Field(
        default=None,
        max_length=256,
        description="the shopper's contact token (the platform resolves it; no address here)",
    )
    promised_at: AwareDatetime | None = Field(default=None, description="ready by then")
    shopper: str | None = Field(
        default=None,
        pattern=IDENTIFIER_PATTERN,
        description="the shopper app's inbox (order updates over MQTT), if any",
    )

    def request_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


# ------------------------------------------------------------------ the webhook's body


class WebhookLineItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    barcode: str = Field(pattern=r"^[0-9]{14}$", description="the GTIN-14")
    quantity: int = Field(default=1, ge=1, le=1000)


class WebhookPickup(BaseModel):
    model_config = ConfigDict(extra="ignore")

    location: str = Field(pattern=IDENTIFIER_PATTERN, description="the store")
    method: PickupMethod = "locker"
    promised_at: AwareDatetime | None = None


class WebhookCustomer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    contact_token: str | None = Field(default=None, max_length=256)


class OrderWebhook(BaseModel):
    """`POST /api/v1/webhooks/orders`: a Shopify-/commercetools-like `orders/create` body.
    Fields storegate does not use (prices, addresses, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")

    id: str | int = Field(description="the platform's order id")
    line_items: list[WebhookLineItem] = Field(min_length=1, max_length=200)
    pickup: WebhookPickup
    customer: WebhookCustomer | None = None

    def intake(self) -> OrderIntake:
        return OrderIntake(
            external_id=str(self.id),
            store=self.pickup.location,
            lines=[IntakeLine(gtin=i.barcode, quantity=i.quantity) for i in self.line_items],
            method=self.pickup.method,
            contact=self.customer.contact_token if self.customer else None,
            promised_at=self.pickup.promised_at,
        )


# ------------------------------------------------------------------ placing


class IntakeConflictError(Exception):
    """The external id is known with a different request (the API answers 409)."""


class IntakeRefusedError(Exception):
    """The order cannot be placed (no locker bank, not enough stock): 409 with this reason."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


async def place(
    domain: LockersDomain, intake: OrderIntake, source: str
) -> tuple[dict[str, Any], bool]:
    """(the order's summary, True if placed now / False if this request was placed before)."""
    request_hash = intake.request_hash()
    known = await _known(domain, intake.external_id, request_hash)
    if known is not None:
        return known, False
    if intake.method == "locker" and not any(s == intake.store for s, _ in domain.banks):
        raise IntakeRefusedError(
            "no_locker", f"store {intake.store!r} has no locker banks (pickup method locker)"
        )
    now = utc_now()
    order_id = new_message_id()
    items = [line.model_dump() for line in intake.lines]
    try:
        async with domain.transaction() as tx:  # SQLite: takes turns (state/db.py writing)
            reserved = domain.options.reserve_stock
            if reserved:
                # First statement of the transaction: it takes the write lock (stock.py).
                try:
                    await stock.reserve(
                        tx.connection,
                        order_id=order_id,
                        store=intake.store,
                        wanted=stock.quantities(items),
                        safety_stock=domain.safety_stock_for(intake.store),
                        at=now,
                    )
                except stock.InsufficientStockError as exc:
                    raise IntakeRefusedError("insufficient_stock", str(exc)) from None
            await tx.connection.execute(
                insert(tables.orders).values(
                    order_id=order_id,
                    store_id=intake.store,
                    state=OrderState.CREATED.value,
                    shopper=intake.shopper,
                    items=items,
                    created_at=now,
                    updated_at=now,
                )
            )
            await tx.connection.execute(
                insert(tables.order_intake).values(
                    order_id=order_id,
                    external_id=intake.external_id,
                    request_hash=request_hash,
                    source=source,
                    method=intake.method,
                    contact=intake.contact,
                    promised_at=intake.promised_at,
                    reserved=reserved,
                )
            )
            order = await orders.load(tx, order_id)
            assert order is not None
            await orders.record_created(tx, order)
            placed = summary(
                order, await intake_of(tx.connection, order_id), domain.options.reserve_stock
            )
    except IntegrityError:
        # the same external id placed concurrently: that transaction won, ours rolled back
        known = await _known(domain, intake.external_id, request_hash)
        if known is None:
            raise
        return known, False
    return placed, True


async def _known(
    domain: LockersDomain, external_id: str, request_hash: str
) -> dict[str, Any] | None:
    i = tables.order_intake
    async with domain.transaction() as tx:
        row = (await tx.connection.execute(select(i).where(i.c.external_id == external_id))).first()
        order = await orders.load(tx, row.order_id) if row is not None else None
    if row is None or order is None:
        return None
    if row.request_hash != request_hash:
        raise IntakeConflictError(
            f"external_id {external_id!r} was already placed as order {row.order_id} with a"
            " different request (lines, store, method, contact, promised_at or shopper differ);"
            " an order is changed through its actions, not by placing it again"
        )
    return summary(order, row, domain.options.reserve_stock)


# ------------------------------------------------------------------ how an order looks


async def intake_of(connection: AsyncConnection, order_id: str) -> Row[Any] | None:
    i = tables.order_intake
    return (await connection.execute(select(i).where(i.c.order_id == order_id))).first()


def method_of(intake: Row[Any] | None) -> str:
    return str(intake.method) if intake is not None else "locker"


def summary(
    order: Row[Any], intake: Row[Any] | None, reserve_stock_default: bool
) -> dict[str, Any]:
    """The order as the orders API shows it (list entries and the head of GET /orders/{id})."""
    reserved = bool(intake.reserved) if intake is not None else reserve_stock_default
    return {
        "order_id": order.order_id,
        "external_id": intake.external_id if intake is not None else None,
        "store": order.store_id,
        "status": status_of(order.state, reserved),
        "state": order.state,
        "method": method_of(intake),
        "items": order.items,
        "contact": intake.contact if intake is not None else None,
        "promised_at": iso(intake.promised_at) if intake is not None else None,
        "arrived_at": iso(intake.arrived_at) if intake is not None else None,
        "arrival_note": intake.arrival_note if intake is not None else None,
        "bank": order.bank,
        "compartment": order.compartment,
        "hold_until": iso(order.hold_until),
        "reason": order.reason,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
    }
