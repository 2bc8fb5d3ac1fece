"""One inventory model for every route, feed and order: per store and GTIN

    available = on_hand - reserved - safety_stock   (never below 0)

- `on_hand`: what RFID counts on the store's shelves (the `inventory` table);
- `reserved`: units promised to open online orders whose goods are still on the shelves;
- `safety_stock`: units the webshop never sells (`domains.inventory.availability`).

Units RFID counts that must never be sold (returned damaged) are a standing reservation
(`hold_back`): on hand still counts them, `reserved` includes them, available does not.

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

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import (
    String,
    and_,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import ColumnElement, Select

from cloud.inventory.config import ZoneOptions
from cloud.inventory.tables import reserved_stock, stock_reservations
from cloud.state import schema
from cloud.state.db import insert_for

Key = tuple[str, str]  # (store, GTIN)


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


async def hold_back(
    connection: AsyncConnection, *, holder: str, store: str, gtin: str, units: int, at: datetime
) -> None:
    """Keep `units` of what RFID counts from ever being sold, under `holder` (e.g. the
    store's damaged returns): a reservation that only `release(holder)` ends."""
    await _lock_counters(connection, store, [gtin])
    r, c = stock_reservations, reserved_stock
    statement = insert_for(connection, r).values(
        order_id=holder, store_id=store, gtin=gtin, quantity=units, at=at
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[r.c.order_id, r.c.gtin], set_={"quantity": r.c.quantity + units}
        )
    )
    await connection.execute(
        update(c)
        .where(c.c.store_id == store, c.c.gtin == gtin)
        .values(reserved=c.c.reserved + units)
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
    query = counted(
        None, schema.inventory.c.store_id == store, schema.inventory.c.gtin.in_(list(gtins))
    )
    return {key[1]: figures.on_hand for key, figures in fold(await connection.execute(query))}


async def reserved_for(
    connection: AsyncConnection, store: str, gtins: Iterable[str]
) -> dict[str, int]:
    c = reserved_stock
    rows = await connection.execute(held(c.c.store_id == store, c.c.gtin.in_(list(gtins))))
    return {gtin: units for (_store, gtin), units in rows_by_key(rows).items()}


async def reserved_by_store(
    connection: AsyncConnection, gtins: Iterable[str]
) -> dict[tuple[str, str], int]:
    """Reserved units per (store, GTIN) for the given GTINs, every store."""
    return rows_by_key(await connection.execute(held(reserved_stock.c.gtin.in_(list(gtins)))))


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


# ------------------------------------------------------------------ the one query


@dataclass(frozen=True, slots=True)
class OnHand:
    """What RFID counts of one (store, GTIN): in total, per zone, on how many shelves."""

    on_hand: int
    by_zone: dict[str, int]
    shelves: int
    updated_at: datetime | None


def zone_of_shelf(zones: ZoneOptions | None, store: Any, shelf: Any) -> ColumnElement[str]:
    """ZoneOptions.zone_of as SQL: the store's own entries first, then every store's, the
    longest (most specific) shelf or reader id first."""
    zones = zones or ZoneOptions()
    whens: list[tuple[ColumnElement[bool], str]] = []

    def matches(prefix: str) -> ColumnElement[bool]:
        return or_(shelf == prefix, shelf.startswith(prefix + "-", autoescape=True))

    for name, entries in sorted(zones.stores.items()):
        for prefix in sorted(entries, key=lambda p: (-len(p), p)):
            whens.append((and_(store == name, matches(prefix)), entries[prefix]))
    for prefix in sorted(zones.shelves, key=lambda p: (-len(p), p)):
        whens.append((matches(prefix), zones.shelves[prefix]))
    if not whens:
        return literal(zones.default, String()).label("zone")
    return case(*whens, else_=literal(zones.default, String())).label("zone")


def counted(zones: ZoneOptions | None, *where: ColumnElement[bool]) -> Select[Any]:
    """The on-hand query every route, feed, webhook and order reads: per (store, GTIN,
    zone) the units counted, the shelves holding any and the newest count, ordered by store
    and GTIN (so a stream folds into keys as it goes; `fold`). `where` filters the
    inventory rows (through its index), before anything is summed."""
    t = schema.inventory
    rows = (
        select(
            t.c.store_id,
            t.c.gtin,
            zone_of_shelf(zones, t.c.store_id, t.c.shelf),
            t.c["count"].label("units"),
            t.c.updated_at,
        )
        .where(*where)
        .subquery("counted")
    )
    positive = case((rows.c.units > 0, rows.c.units), else_=0)
    return (
        select(
            rows.c.store_id,
            rows.c.gtin,
            rows.c.zone,
            func.sum(positive).label("on_hand"),
            func.count(case((rows.c.units > 0, 1))).label("shelves"),
            func.max(rows.c.updated_at).label("updated_at"),
        )
        .group_by(rows.c.store_id, rows.c.gtin, rows.c.zone)
        .order_by(rows.c.store_id, rows.c.gtin, rows.c.zone)
    )


def fold(rows: Iterable[Any]) -> Iterator[tuple[Key, OnHand]]:
    """`counted`'s rows (per zone, ordered by key) as one OnHand per (store, GTIN)."""
    key: Key | None = None
    by_zone: dict[str, int] = {}
    shelves, newest = 0, None
    for row in rows:
        if (row.store_id, row.gtin) != key:
            if key is not None:
                yield key, OnHand(sum(by_zone.values()), by_zone, shelves, newest)
            key, by_zone, shelves, newest = (row.store_id, row.gtin), {}, 0, None
        by_zone[row.zone] = by_zone.get(row.zone, 0) + int(row.on_hand or 0)
        shelves += int(row.shelves)
        if row.updated_at is not None and (newest is None or row.updated_at > newest):
            newest = row.updated_at
    if key is not None:
        yield key, OnHand(sum(by_zone.values()), by_zone, shelves, newest)


async def fold_stream(rows: AsyncIterator[Any]) -> AsyncIterator[tuple[Key, OnHand]]:
    """`fold` over a streamed result: a key is yielded once its last zone row is in."""
    pending: list[Any] = []
    async for row in rows:
        if pending and (row.store_id, row.gtin) != (pending[0].store_id, pending[0].gtin):
            for item in fold(pending):
                yield item
            pending = []
        pending.append(row)
    for item in fold(pending):
        yield item


def held(*where: ColumnElement[bool]) -> Select[Any]:
    """Units reserved by open orders per (store, GTIN), those above 0."""
    c = reserved_stock
    return select(c.c.store_id, c.c.gtin, c.c.reserved).where(c.c.reserved > 0, *where)


def rows_by_key(rows: Iterable[Any]) -> dict[Key, int]:
    return {(store, gtin): int(units) for store, gtin, units in rows}


@dataclass(frozen=True, slots=True)
class Level:
    """One (store, GTIN) in the one model."""

    on_hand: int
    reserved: int
    safety_stock: int
    available: int
    updated_at: datetime | None
    by_zone: dict[str, int] = field(default_factory=dict)
    shelves: int = 0

    @classmethod
    def of(cls, counted: OnHand | None, reserved: int, safety_stock: int) -> Level:
        counted = counted or OnHand(0, {}, 0, None)
        return cls(
            counted.on_hand,
            reserved,
            safety_stock,
            available_to_sell(counted.on_hand, reserved, safety_stock),
            counted.updated_at,
            counted.by_zone,
            counted.shelves,
        )


_KEYS_PER_QUERY = 500


async def levels(
    connection: AsyncConnection,
    safety_for: Callable[[str], int],
    *,
    zones: ZoneOptions | None = None,
    keys: Iterable[Key] | None = None,
    stores: Iterable[str] | None = None,
    gtins: Iterable[str] | None = None,
) -> dict[Key, Level]:
    """The model's figures for the given keys, or every GTIN of the given stores (or of the
    given GTINs), or (all None) everything the stores ever counted or reserved."""
    t, c = schema.inventory, reserved_stock
    on_hand: dict[Key, OnHand] = {}
    reserved: dict[Key, int] = {}

    async def read(where_counted: Any, where_held: Any) -> None:
        on_hand.update(fold(await connection.execute(counted(zones, where_counted))))
        reserved.update(rows_by_key(await connection.execute(held(where_held))))

    if keys is not None:
        wanted = sorted(set(keys))
        for start in range(0, len(wanted), _KEYS_PER_QUERY):
            chunk = wanted[start : start + _KEYS_PER_QUERY]
            await read(
                tuple_(t.c.store_id, t.c.gtin).in_(chunk), tuple_(c.c.store_id, c.c.gtin).in_(chunk)
            )
        found = set(wanted)
    else:
        where_counted: list[ColumnElement[bool]] = []
        where_held: list[ColumnElement[bool]] = []
        if stores is not None:
            names = sorted(set(stores))
            where_counted.append(t.c.store_id.in_(names))
            where_held.append(c.c.store_id.in_(names))
        if gtins is not None:
            items = sorted(set(gtins))
            where_counted.append(t.c.gtin.in_(items))
            where_held.append(c.c.gtin.in_(items))
        await read(and_(true(), *where_counted), and_(true(), *where_held))
        found = set(on_hand) | set(reserved)
    return {
        key: Level.of(on_hand.get(key), reserved.get(key, 0), safety_for(key[0])) for key in found
    }
