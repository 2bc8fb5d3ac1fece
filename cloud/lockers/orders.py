"""Orders in the state store: load, find by place, move (checked, timestamped, published).

Every function works inside the caller's transaction (`DomainTx`: the ingest batch or an
API request). What must leave the process (SSE changes, edge commands, notifications) is
queued on the tx or in the same transaction, and released only after the commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update

from cloud.domains import DomainTx
from cloud.inventory import stock
from cloud.lockers import picks, tables
from cloud.lockers.machine import IN_LOCKER, ON_SHELVES, OrderState, check
from cloud.lockers.notify import NOTIFY_STATES, Notifier
from cloud.lockers.views import order_view


async def load(tx: DomainTx, order_id: str) -> Row[Any] | None:
    o = tables.orders
    return (await tx.connection.execute(select(o).where(o.c.order_id == order_id))).first()


async def in_compartment(tx: DomainTx, store: str, bank: str, compartment: str) -> Row[Any] | None:
    """The newest order that holds (or is being given) this compartment, if any."""
    o = tables.orders
    query = (
        select(o)
        .where(
            o.c.store_id == store,
            o.c.bank == bank,
            o.c.compartment == compartment,
            o.c.state.in_([s.value for s in (*IN_LOCKER, OrderState.STAGED)]),
        )
        .order_by(o.c.seq.desc())
        .limit(1)
    )
    return (await tx.connection.execute(query)).first()


async def move(
    tx: DomainTx,
    notifier: Notifier,
    order: Row[Any],
    target: OrderState,
    cause: str,
    at: datetime,
    **values: Any,
) -> None:
    """Move `order` to `target`; IllegalTransitionError if the state machine forbids it."""
    current = OrderState(order.state)
    check(order.order_id, current, target)
    if current in ON_SHELVES and target not in ON_SHELVES:
        # picked (staged) or given up: RFID no longer counts the goods as ours to hold
        await stock.release(tx.connection, order.order_id)
    o = tables.orders
    await tx.connection.execute(
        update(o)
        .where(o.c.order_id == order.order_id)
        .values(state=target.value, updated_at=at, **values)
    )
    if target is OrderState.COLLECTED:
        # sold with the status change: an exit read after this commit finds them sold
        await picks.sell(tx, order, at)
    await _transition(tx, order.order_id, order.store_id, current, target, cause, at)
    merged = {**order._asdict(), **values}
    tx.change("order", order.store_id, {**order_view(merged, target.value, at), "cause": cause})
    if target in NOTIFY_STATES:
        await notifier.queue(tx, merged, target, at)


async def update_fields(tx: DomainTx, order_id: str, **values: Any) -> None:
    o = tables.orders
    await tx.connection.execute(update(o).where(o.c.order_id == order_id).values(**values))


async def record_created(tx: DomainTx, order: Row[Any]) -> None:
    await _transition(
        tx, order.order_id, order.store_id, None, OrderState.CREATED, "created", order.created_at
    )
    view = order_view(order._asdict(), OrderState.CREATED.value, order.created_at)
    tx.change("order", order.store_id, {**view, "cause": "created"})


async def _transition(
    tx: DomainTx,
    order_id: str,
    store: str,
    current: OrderState | None,
    target: OrderState,
    cause: str,
    at: datetime,
) -> None:
    await tx.connection.execute(
        insert(tables.transitions).values(
            order_id=order_id,
            store_id=store,
            from_state=current.value if current else None,
            to_state=target.value,
            cause=cause,
            at=at,
        )
    )
