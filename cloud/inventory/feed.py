"""The local inventory feed in Google Merchant Center's format, from the one inventory model.

One row per (store, GTIN) the stores have ever counted, out-of-stock rows included: Merchant
Center only stops showing a product in a store when the feed says `out_of_stock`. The
attributes and their rules follow Google's local inventory data specification
(support.google.com/merchants/answer/14819809) and its availability guide (answer/7371390):

- `store_code` (required): the store's Business Profile code (`local_feed.stores`), else
  its storegate id;
- `id` (required, at most 50 characters): the product id of the Merchant Center product
  feed (`local_feed.product_ids`), else the GTIN;
- `availability` (required): `out_of_stock` at 0 available, `limited_availability` up to
  `limited_max` (Google: 1-2), `in_stock` above;
- `quantity`: what the webshop may sell, `available` of cloud/inventory/stock.py (on hand -
  reserved - safety stock), an integer >= 0;
- `pickup_method` / `pickup_sla`: `buy`, `reserve`, `ship to store` or `not supported`, and
  the time to ready (`same day` ... `multi-week`), given together unless pickup is not
  supported.

`price` is optional in the specification and left out: storegate has no prices yet, and a
feed row without it keeps the product feed's price.

The feed is read with `connection.stream`, so 1,000 stores of 5,000 GTINs are written row by
row, never held whole.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.api.timestamps import iso_utc
from cloud.inventory.config import InventoryOptions
from cloud.inventory.stock import Level, counted, fold_stream, held, rows_by_key
from cloud.state import schema

# The columns of the tab-delimited file, in Google's attribute names.
COLUMNS = ("store_code", "id", "availability", "quantity", "pickup_method", "pickup_sla")
FeedFormat = Literal["tsv", "jsonl"]


@dataclass(frozen=True, slots=True)
class FeedRow:
    store: str
    gtin: str
    store_code: str
    id: str
    availability: str
    quantity: int
    pickup_method: str
    pickup_sla: str | None
    on_hand: int
    on_hand_by_zone: dict[str, int]
    reserved: int
    safety_stock: int
    updated_at: datetime | None

    def attributes(self) -> dict[str, str]:
        """Google's attributes, as the tab-delimited file spells them."""
        return {
            "store_code": self.store_code,
            "id": self.id,
            "availability": self.availability,
            "quantity": str(self.quantity),
            "pickup_method": self.pickup_method,
            "pickup_sla": self.pickup_sla or "",
        }


def availability_label(available: int, limited_max: int) -> str:
    if available <= 0:
        return "out_of_stock"
    if available <= limited_max:
        return "limited_availability"
    return "in_stock"


async def feed_rows(
    engine: AsyncEngine,
    options: InventoryOptions,
    may_see: Callable[[str], bool] = lambda _store: True,
    stores: Iterable[str] | None = None,
) -> AsyncIterator[FeedRow]:
    feed, t = options.local_feed, schema.inventory
    where = [] if stores is None else [t.c.store_id.in_(sorted(set(stores)))]
    query = counted(options.zones, *where)
    async with engine.connect() as connection:
        # Open reservations are few (open orders' lines); read them whole, stream the rest.
        reserved_units = rows_by_key(await connection.execute(held()))
        async for (store, gtin), figures in fold_stream(await connection.stream(query)):
            if not may_see(store):
                continue
            level = Level.of(
                figures,
                reserved_units.get((store, gtin), 0),
                options.availability.safety_for(store),
            )
            method, sla = feed.pickup(store)
            yield FeedRow(
                store=store,
                gtin=gtin,
                store_code=feed.store_code(store),
                id=feed.product_ids.get(gtin, gtin),
                availability=availability_label(level.available, feed.limited_max),
                quantity=level.available,
                pickup_method=method,
                pickup_sla=sla,
                on_hand=level.on_hand,
                on_hand_by_zone=level.by_zone,
                reserved=level.reserved,
                safety_stock=level.safety_stock,
                updated_at=figures.updated_at,
            )


async def render(rows: AsyncIterator[FeedRow], fmt: FeedFormat) -> AsyncIterator[str]:
    """The feed as text, a chunk per row: a tab-delimited file with a header row, or JSON
    lines carrying the model's figures beside Google's attributes."""
    if fmt == "tsv":
        yield "\t".join(COLUMNS) + "\n"
    async for row in rows:
        if fmt == "tsv":
            buffer = io.StringIO()
            csv.writer(buffer, delimiter="\t", lineterminator="\n").writerow(
                row.attributes()[c] for c in COLUMNS
            )
            yield buffer.getvalue()
        else:
            yield (
                json.dumps(
                    {
                        **row.attributes(),
                        "quantity": row.quantity,
                        "pickup_sla": row.pickup_sla,
                        "store": row.store,
                        "gtin": row.gtin,
                        "on_hand": row.on_hand,
                        "on_hand_by_zone": row.on_hand_by_zone,
                        "reserved": row.reserved,
                        "safety_stock": row.safety_stock,
                        "timestamp": iso_utc(row.updated_at),
                    }
                )
                + "\n"
            )


async def write_file(
    engine: AsyncEngine, options: InventoryOptions, path: Path, fmt: FeedFormat
) -> int:
    """Write the whole feed to `path` atomically (a reader never sees half a file); returns
    the rows written."""
    partial = path.with_name(path.name + ".partial")
    rows = -1 if fmt == "tsv" else 0  # the header is not a row
    with partial.open("w", encoding="utf-8", newline="") as out:
        async for chunk in render(feed_rows(engine, options), fmt):
            out.write(chunk)
            rows += 1
    partial.replace(path)
    return rows
