"""The product table's queries: upsert an import, search, one product, where a GTIN is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.catalogue.csvimport import Product
from cloud.catalogue.tables import products
from cloud.inventory.tables import planograms
from cloud.state import schema

BATCH = 500  # GTINs per statement: well under SQLite's and asyncpg's parameter limits


async def upsert(
    connection: AsyncConnection, items: Sequence[Product], at: datetime
) -> tuple[int, int]:
    """Insert new GTINs, replace known ones; (created, updated)."""
    created = updated = 0
    t = products
    for start in range(0, len(items), BATCH):
        chunk = items[start : start + BATCH]
        known = set(
            (
                await connection.execute(
                    select(t.c.gtin).where(t.c.gtin.in_([p.gtin for p in chunk]))
                )
            ).scalars()
        )
        fresh = [{**asdict(p), "updated_at": at} for p in chunk if p.gtin not in known]
        stale = [
            {**{f"v_{k}": v for k, v in asdict(p).items()}, "v_updated_at": at}
            for p in chunk
            if p.gtin in known
        ]
        if fresh:
            await connection.execute(t.insert(), fresh)
        if stale:
            columns = [c.name for c in t.columns if c.name != "gtin"]
            await connection.execute(
                update(t)
                .where(t.c.gtin == bindparam("v_gtin"))
                .values({c: bindparam(f"v_{c}") for c in columns}),
                stale,
            )
        created += len(fresh)
        updated += len(stale)
    return created, updated


def product_data(row: Any) -> dict[str, Any]:
    """The API's shape of a product. The price is a decimal string ("19.90"): money is
    never a binary float."""
    price = row.price
    return {
        "gtin": row.gtin,
        "name": row.name,
        "size": row.size,
        "colour": row.colour,
        "price": None if price is None else f"{price:.2f}",
        "currency": row.currency,
        "category": row.category,
    }


def _like(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search(connection: AsyncConnection, q: str | None, limit: int) -> list[dict[str, Any]]:
    """Products whose GTIN, name, category, colour or size contains `q` (any case), GTIN
    matches first, then by name."""
    t = products
    query = select(t).order_by(t.c.name, t.c.gtin).limit(limit)
    words = (q or "").split()
    for word in words:
        pattern = _like(word)
        query = query.where(
            or_(
                *(
                    func.lower(column).like(pattern, escape="\\")
                    for column in (t.c.gtin, t.c.name, t.c.category, t.c.colour, t.c.size)
                )
            )
        )
    rows = (await connection.execute(query)).all()
    return [product_data(row) for row in rows]


async def get(connection: AsyncConnection, gtin: str) -> dict[str, Any] | None:
    row = (await connection.execute(select(products).where(products.c.gtin == gtin))).first()
    return None if row is None else product_data(row)


async def names(connection: AsyncConnection, gtins: Sequence[str]) -> dict[str, dict[str, Any]]:
    """gtin -> product, for the GTINs the catalogue knows."""
    wanted = sorted(set(gtins))
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(wanted), BATCH):
        chunk = wanted[start : start + BATCH]
        rows = (await connection.execute(select(products).where(products.c.gtin.in_(chunk)))).all()
        found |= {row.gtin: product_data(row) for row in rows}
    return found


async def shelves_here(
    connection: AsyncConnection, store: str, gtin: str
) -> list[tuple[str, int, bool]]:
    """(shelf, count, planned) for every shelf of `store` that holds `gtin` or whose
    planogram says it belongs there (count 0 then: planned but not seen)."""
    inv = schema.inventory
    counted = {
        row.shelf: int(row._mapping["count"])
        for row in (
            await connection.execute(
                select(inv.c.shelf, inv.c["count"]).where(
                    inv.c.store_id == store, inv.c.gtin == gtin, inv.c["count"] > 0
                )
            )
        ).all()
    }
    planned = {
        row.shelf
        for row in (
            await connection.execute(
                select(planograms.c.shelf, planograms.c.gtins).where(planograms.c.store_id == store)
            )
        ).all()
        if gtin in (row.gtins or [])
    }
    shelves = sorted(set(counted) | planned)
    return [(shelf, counted.get(shelf, 0), shelf in planned) for shelf in shelves]


async def on_hand_by_store(connection: AsyncConnection, gtin: str) -> dict[str, int]:
    """store -> units of `gtin` counted on its shelves (stores with none are left out)."""
    inv = schema.inventory
    rows = (
        await connection.execute(
            select(inv.c.store_id, func.sum(inv.c["count"]).label("on_hand"))
            .where(inv.c.gtin == gtin, inv.c["count"] > 0)
            .group_by(inv.c.store_id)
            .order_by(inv.c.store_id)
        )
    ).all()
    return {row.store_id: int(row.on_hand) for row in rows}


async def store_names(connection: AsyncConnection) -> dict[str, str]:
    s = schema.stores
    rows = (await connection.execute(select(s.c.store_id, s.c.name))).all()
    return {row.store_id: row.name for row in rows}
