"""Items by EPC: where RFID last saw each one (for pick lists), and returns read back in.

`epc_locations` follows the RFID item events: `arrived`/`moved` put the EPC on its shelf,
`departed` marks it off the shelf (still in the store: no pick list offers it, a pick may
name it), `left_store` removes it. A returned item is `received` the first time RFID reads
its EPC in the order's store after the return was registered, and is no longer sold
(`sales.unsell`: carried out again unsold, it raises `exit_unsold`); one returned damaged is also
held back from sale (`stock.hold_back` under `damaged:<store>`: on hand, reserved, never
available).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, insert, select, update

from cloud.domains import DomainTx
from cloud.inventory import stock
from cloud.inventory.sales import unsell
from cloud.lockers import tables
from cloud.lockers.views import iso
from protocols.messages import ItemEvent, ItemEventKind, RfidEvents

log = logging.getLogger(__name__)

_ON_SHELF = (ItemEventKind.ARRIVED, ItemEventKind.MOVED)


async def on_rfid(tx: DomainTx, message: RfidEvents) -> None:
    latest: dict[str, ItemEvent] = {}
    for item in message.items:
        latest[item.epc] = item  # a message's events are in order: the last one stands
    e = tables.epc_locations
    off_shelf = {epc: i.at for epc, i in latest.items() if i.kind is ItemEventKind.DEPARTED}
    await tx.connection.execute(
        delete(e).where(
            e.c.store_id == message.store, e.c.epc.in_([x for x in latest if x not in off_shelf])
        )
    )
    for epc, at in off_shelf.items():
        # still in the store (a picker's hand, a basket) until `left_store`: a pick may name it
        await tx.connection.execute(
            update(e)
            .where(e.c.store_id == message.store, e.c.epc == epc, e.c.departed_at.is_(None))
            .values(departed_at=at)
        )
    seen: list[dict[str, Any]] = [
        {
            "store_id": message.store,
            "epc": item.epc,
            "gtin": item.gtin,
            "shelf": item.shelf,
            "seen_at": item.at,
        }
        for item in latest.values()
        if item.kind in _ON_SHELF and item.gtin is not None and item.shelf is not None
    ]
    if seen:
        await tx.connection.execute(insert(e), seen)
        await _receive_returns(tx, message.store, {row["epc"]: row for row in seen})


async def _receive_returns(tx: DomainTx, store: str, seen: dict[str, dict[str, Any]]) -> None:
    r = tables.order_returns
    expected = (
        await tx.connection.execute(
            select(r).where(r.c.store_id == store, r.c.status == "expected", r.c.epc.in_(seen))
        )
    ).all()
    for row in expected:
        read = seen[row.epc]
        gtin = str(read["gtin"])
        order = (
            await tx.connection.execute(
                select(tables.orders.c["items"]).where(tables.orders.c.order_id == row.order_id)
            )
        ).scalar_one()
        if gtin not in {str(line["gtin"]) for line in order}:
            log.warning(
                "return %d of order %s: EPC %s is GTIN %s, not on the order; left expected",
                row.id,
                row.order_id,
                row.epc,
                gtin,
            )
            await tx.connection.execute(
                update(r)
                .where(r.c.id == row.id)
                .values(reason=f"read as GTIN {gtin}, which the order does not have")
            )
            continue
        status = "damaged" if row.condition == "damaged" else "received"
        await tx.connection.execute(
            update(r)
            .where(r.c.id == row.id)
            .values(status=status, gtin=gtin, received_at=read["seen_at"], reason=None)
        )
        # back in the store's hands (damaged too: still ours, never to be carried out)
        await unsell(tx.connection, store, [row.epc])
        if status == "damaged":
            await stock.hold_back(
                tx.connection,
                holder=damaged_holder(store),
                store=store,
                gtin=gtin,
                units=1,
                at=read["seen_at"],
            )
        tx.change(
            "order_return",
            store,
            {"order_id": row.order_id, "return_id": row.id, "epc": row.epc, "status": status},
        )


def damaged_holder(store: str) -> str:
    """The standing reservation that keeps a store's damaged returns from being sold."""
    return f"damaged:{store}"


async def returns_of(connection: Any, order_id: str) -> list[dict[str, Any]]:
    r = tables.order_returns
    rows = (
        await connection.execute(select(r).where(r.c.order_id == order_id).order_by(r.c.id))
    ).all()
    return [
        {
            "id": row.id,
            "epc": row.epc,
            "gtin": row.gtin,
            "method": row.method,
            "bank": row.bank,
            "compartment": row.compartment,
            "condition": row.condition,
            "status": row.status,
            "reason": row.reason,
            "created_at": iso(row.created_at),
            "received_at": iso(row.received_at),
        }
        for row in rows
    ]
