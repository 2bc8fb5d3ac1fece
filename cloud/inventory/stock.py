"""One inventory model for every route, feed and order: per store and GTIN

    available = on_hand - reserved - safety_stock   (never below 0)

- `on_hand`: what RFID counts on the store's shelves (the `inventory` table);
- `reserved`: units promised to open online orders whose goods are still on the shelves;
- `safety_stock`: units the webshop never sells (`domains.inventory.availability`).

A reservation lives from the moment the order is accepted until its goods leave the shelves
(the order is staged: staff picked them, so RFID no longer counts them) or the order ends
without them (cancelled). Holding it longer would count a picked unit twice: once missing
from on_hand, once reserved.

Taking a reservation is atomic with the order: `reserve` first writes the (store, GTIN)
counter rows, in GTIN order, and only then reads on_hand and reserved. The write takes
SQLite's single write lock, or PostgreSQL's row lock, before anything is read, so two
concurrent orders for the last unit are serialised and the second sees the first's
reservation (on PostgreSQL under READ COMMITTED each statement reads what committed before
it). The GTIN order keeps two multi-line orders from deadlocking.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.inventory.tables import reserved_stock, stock_reservations
from cloud.state import schema
from cloud.state.db import insert_for


def available_to_sell(on_hand: int, reserved: int, safety_stock: int) -> int:
    """What the online channel may promise, never below 0."""
    return max(0, on_hand - reserved - safety_stock)


@dataclass(frozen=True, slots=True)
class Shortfall:
    gtin: str
    wanted: int
    available: int
    on_hand: int
    reserved: int
    safety_stock: int

    def describe(self) -> str:
        return (
            f"{self.gtin}: {self.wanted} wanted, {self.available} available"
            f" (on hand {self.on_hand}, reserved {self.reserved},"
            f" safety stock {self.safety_stock})"
        )


class InsufficientStockError(Exception):
    """The order's lines cannot all be reserved; nothing was reserved."""

    def __init__(self, store: str, shortfalls: list[Shortfall]) -> None:
        self.store = store
        self.shortfalls = shortfalls
        super().__init__(
            f"store {store} cannot reserve: " + "; ".join(s.describe() for s in shortfalls)
        )


def quantities(lines: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Order lines ({gtin, quantity}) summed per GTIN (a GTIN may appear on two lines)."""
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[str(line["gtin"])] = wanted.get(str(line["gtin"]), 0) + int(line["quantity"])
    return wanted


async def reserve(
    connection: AsyncConnection,
    *,
    order_id: str,
    store: str,
    wanted: Mapping[str, int],
    safety_stock: int,
    at: datetime,
) -> None:
    """Reserve every line of an order or none (InsufficientStockError): call it inside the
    transaction that records the order, so the order and its reservation commit together."""
    gtins = sorted(wanted)
    await _lock_counters(connection, store, gtins)
    on_hand = await on_hand_for(connection, store, gtins)
    reserved = await reserved_for(connection, store, gtins)
    short = []
    for gtin in gtins:
        available = available_to_sell(on_hand.get(gtin, 0), reserved.get(gtin, 0), safety_stock)
        if wanted[gtin] > available:
            short.append(
                Shortfall(
                    gtin,
                    wanted[gtin],
                    available,
                    on_hand.get(gtin, 0),
                    reserved.get(gtin, 0),
                    safety_stock,
                )
            )
    if short:
        raise InsufficientStockError(store, short)
    r, c = stock_reservations, reserved_stock
    await connection.execute(
        r.insert(),
        [
            {"order_id": order_id, "store_id": store, "gtin": g, "quantity": wanted[g], "at": at}
            for g in gtins
        ],
    )
    for gtin in gtins:
        await connection.execute(
            update(c)
            .where(c.c.store_id == store, c.c.gtin == gtin)
            .values(reserved=c.c.reserved + wanted[gtin])
        )


async def release(connection: AsyncConnection, order_id: str) -> dict[str, int]:
    """Give an order's reserved units back (idempotent: a second call releases nothing).
    Returns what was released per GTIN."""
    r, c = stock_reservations, reserved_stock
    rows = (
        await connection.execute(
            select(r.c.store_id, r.c.gtin, r.c.quantity)
            .where(r.c.order_id == order_id)
            .order_by(r.c.gtin)
        )
    ).all()
    if not rows:
        return {}
    for row in rows:
        await connection.execute(
            update(c)
            .where(c.c.store_id == row.store_id, c.c.gtin == row.gtin)
            .values(reserved=c.c.reserved - row.quantity)
        )
    await connection.execute(delete(r).where(r.c.order_id == order_id))
    return {row.gtin: int(row.quantity) for row in rows}


async def on_hand_for(
    connection: AsyncConnection, store: str, gtins: Iterable[str]
) -> dict[str, int]:
    t = schema.inventory
    rows = await connection.execute(
        select(t.c.gtin, func.sum(t.c["count"]))
        .where(t.c.store_id == store, t.c.gtin.in_(list(gtins)), t.c["count"] > 0)
        .group_by(t.c.gtin)
    )
    return {gtin: int(total) for gtin, total in rows}


async def reserved_for(
    connection: AsyncConnection, store: str, gtins: Iterable[str]
) -> dict[str, int]:
    c = reserved_stock
    rows = await connection.execute(
        select(c.c.gtin, c.c.reserved).where(
            c.c.store_id == store, c.c.gtin.in_(list(gtins)), c.c.reserved > 0
        )
    )
    return {gtin: int(n) for gtin, n in rows}


async def reserved_by_store(
    connection: AsyncConnection, gtins: Iterable[str]
) -> dict[tuple[str, str], int]:
    """Reserved units per (store, GTIN) for the given GTINs, every store."""
    c = reserved_stock
    rows = await connection.execute(
        select(c.c.store_id, c.c.gtin, c.c.reserved).where(
            c.c.gtin.in_(list(gtins)), c.c.reserved > 0
        )
    )
    return {(store, gtin): int(n) for store, gtin, n in rows}


async def _lock_counters(connection: AsyncConnection, store: str, gtins: list[str]) -> None:
    c = reserved_stock
    for gtin in gtins:
        statement = insert_for(connection, c).values(store_id=store, gtin=gtin, reserved=0)
        # DO UPDATE (not DO NOTHING): PostgreSQL locks the row only when it updates it.
        await connection.execute(
            statement.on_conflict_do_update(
                index_elements=[c.c.store_id, c.c.gtin], set_={"reserved": c.c.reserved}
            )
        )
