"""The EPCs staff picked for an order, and their sale when the order is collected.

Staff scan the items they take and send the EPCs with `POST /orders/{id}/stage`. Each must
be an item RFID saw in the order's store (`epc_locations`: on a shelf, or off it since and
not yet gone from the store, as a picked item is), of one of the
order's GTINs, at most the line's quantity per GTIN, not sold, not returned damaged and not
picked for another order still open. A bad one rejects the whole stage (409, the EPC and
why), so the staff app can rescan. An order staged without EPCs has none recorded, and its
view says so: nothing will be marked sold for it, so its items would raise `exit_unsold`
if they passed an exit.

When the order becomes `collected` (by staff at the counter or curbside, or by the locker)
`sell` marks its picked EPCs sold (`sold_items`, source "order", the sale id the order's
external id) in the same transaction as the status change: a collected item carried out
raises nothing; one of a cancelled or expired order was never sold and does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.domains import DomainTx
from cloud.inventory.config import SALES_FLOOR
from cloud.inventory.sales import SoldItem, mark_sold, sold_among
from cloud.lockers import tables
from cloud.lockers.machine import OrderState
from cloud.lockers.views import iso

ALERT = "alert"  # the inventory domain's live-change kind: cleared exit alerts
MAX_PICKED = 1000  # EPCs per stage request
_SALE_ID_MAX = 64  # sold_items.sale_id
# an order in one of these no longer holds the items it picked
_RELEASED = (OrderState.CANCELLED, OrderState.RETURNED_TO_STOCK, OrderState.COLLECTED)
NOT_RECORDED = (
    "staged without EPCs: none recorded, so none will be marked sold when the order is"
    " collected (an item of it seen at an exit raises exit_unsold)"
)


ZoneOf = Callable[[str, str], str]  # (store, shelf) -> zone: domains.inventory.zones


def on_the_floor(_store: str, _shelf: str) -> str:
    """The zone of every shelf while no zones are configured."""
    return SALES_FLOOR


class PickRefusedError(Exception):
    """A scanned EPC the order cannot take; the message names it and says why."""


def _wanted(items: Sequence[dict[str, Any]]) -> Counter[str]:
    wanted: Counter[str] = Counter()
    for line in items:
        wanted[str(line["gtin"])] += int(line.get("quantity", 1))
    return wanted


async def record(
    connection: AsyncConnection, order: Row[Any], epcs: Sequence[str], by: str, at: datetime
) -> None:
    """Check `epcs` against the order and the store, then make them the order's picks
    (replacing earlier ones: a re-stage after an exception is a new pick)."""
    if len(set(epcs)) != len(epcs):
        raise PickRefusedError("an EPC is listed twice")
    store = order.store_id
    e, p, r = tables.epc_locations, tables.order_picks, tables.order_returns
    seen = {
        row.epc: str(row.gtin)
        for row in await connection.execute(
            select(e.c.epc, e.c.gtin).where(e.c.store_id == store, e.c.epc.in_(epcs))
        )
    }
    wanted = _wanted(order.items)
    problems: list[str] = []
    for epc in epcs:
        gtin = seen.get(epc)
        if gtin is None:
            problems.append(f"EPC {epc}: RFID has not seen it in store {store}")
        elif gtin not in wanted:
            problems.append(f"EPC {epc} is GTIN {gtin}, which the order does not have")
    if not problems:
        per_gtin = Counter(seen[epc] for epc in epcs)
        problems += [
            f"{count} EPCs of GTIN {gtin}, the order has {wanted[gtin]}"
            for gtin, count in sorted(per_gtin.items())
            if count > wanted[gtin]
        ]
    if not problems:
        for epc in sorted(await sold_among(connection, store, epcs)):
            problems.append(f"EPC {epc} is sold")
        damaged = select(r.c.epc).where(
            r.c.store_id == store, r.c.status == "damaged", r.c.epc.in_(epcs)
        )
        for (epc,) in await connection.execute(damaged):
            problems.append(f"EPC {epc} was returned damaged")
        taken = (
            held(store)
            .add_columns(p.c.order_id)
            .where(p.c.epc.in_(epcs), p.c.order_id != order.order_id)
        )
        for epc, other in await connection.execute(taken):
            problems.append(f"EPC {epc} is picked for order {other}")
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if problems[5:] else "")
        raise PickRefusedError(shown)
    await connection.execute(delete(p).where(p.c.order_id == order.order_id))
    if not epcs:
        return
    await connection.execute(
        insert(p),
        [
            {
                "order_id": order.order_id,
                "epc": epc,
                "store_id": store,
                "gtin": seen[epc],
                "picked_at": at,
                "picked_by": by,
            }
            for epc in epcs
        ],
    )


def held(store: str) -> Select[tuple[str]]:
    """The store's EPCs picked for orders that still hold them (pick lists leave them out)."""
    p, o = tables.order_picks, tables.orders
    return (
        select(p.c.epc)
        .join(o, o.c.order_id == p.c.order_id)
        .where(p.c.store_id == store, o.c.state.not_in([s.value for s in _RELEASED]))
    )


async def picked(connection: AsyncConnection, order_id: str) -> list[Row[Any]]:
    p = tables.order_picks
    query = select(p).where(p.c.order_id == order_id).order_by(p.c.gtin, p.c.epc)
    return list((await connection.execute(query)).all())


async def view(connection: AsyncConnection, order: Row[Any]) -> dict[str, Any]:
    """The order's `picked` block: the EPCs staff scanned, or why there are none."""
    rows = await picked(connection, order.order_id)
    staged = order.state not in (OrderState.CREATED.value, OrderState.PICKING.value)
    note = None
    if not rows and staged and order.state != OrderState.CANCELLED.value:
        note = NOT_RECORDED
    elif not rows and order.state == OrderState.CANCELLED.value:
        note = "cancelled before its pick was recorded"
    per_gtin = Counter(str(row.gtin) for row in rows)
    short = {g: n - per_gtin[g] for g, n in _wanted(order.items).items() if per_gtin[g] < n}
    return {
        "recorded": bool(rows),
        "epcs": [
            {"epc": row.epc, "gtin": row.gtin, "picked_at": iso(row.picked_at)} for row in rows
        ],
        "short": short if rows else {},
        "note": note,
    }


async def sell(tx: DomainTx, order: Row[Any], at: datetime) -> int:
    """Mark the collected order's picked EPCs sold; returns how many were new. Cleared
    exit alerts (the shopper walked out before the order was marked collected) go out as
    live changes after the commit."""
    rows = await picked(tx.connection, order.order_id)
    if not rows:
        return 0
    i = tables.order_intake
    external = (
        await tx.connection.execute(select(i.c.external_id).where(i.c.order_id == order.order_id))
    ).scalar()
    # the platform's id names the sale; the order id stands in for a longer one (or none)
    sale_id = external if external and len(external) <= _SALE_ID_MAX else order.order_id
    marked, cleared = await mark_sold(
        tx.connection,
        order.store_id,
        [SoldItem(row.epc, row.gtin) for row in rows],
        sale_id=sale_id,
        source="order",
        at=at,
    )
    for data in cleared:
        tx.change(ALERT, order.store_id, data)
    return marked
