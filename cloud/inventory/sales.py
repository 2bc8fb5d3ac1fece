"""Sales and exits: which EPCs are sold, and what an item seen leaving means.

- `mark_sold` records sold EPCs: the POS sale feed (`POST /api/v1/stores/{store}/sales`) and
  collected online orders (the orders domain calls it with `source="order"`). Idempotent per
  (store, EPC): a resent sale changes nothing. An `exit_unsold` alert still open for an EPC
  that is then sold (the POS synced late) clears.
- `unsell` undoes a sale when the item comes back: a return read back in by RFID
  (cloud/lockers/items.py) is the store's stock again, and leaves through an exit unsold
  like any other item. The sale stops counting as demand for the reorder suggestions.
- `on_item_events` runs in the ingest batch for every live `rfid.events`: an item that
  arrives on or moves to a shelf in the `exit` zone is a departure through the exit; unsold,
  it raises a loss-prevention alert `exit_unsold` (one per EPC while open) whose value is
  the price of the GTIN's latest sale in that store (null when none is known: the product
  catalogue with list prices is not part of this domain yet). A `left_store` event (unseen
  in the whole store for `left_store_s`) is a departure too. Departures and sales are the
  demand behind the reorder suggestions (cloud/inventory/reorder.py).

Only events that name an exit or leave the store cost statements; the rest costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.inventory import rules
from cloud.inventory.config import EXIT, ZoneOptions
from cloud.inventory.evaluate import alert_data
from cloud.inventory.rules import AlertState, AlertType
from cloud.inventory.tables import inventory_alerts, item_departures, sold_items
from cloud.state.db import insert_for
from protocols.messages import ItemEvent, ItemEventKind

EXIT_VIA, LEFT_STORE_VIA = "exit", "left_store"


@dataclass(frozen=True, slots=True)
class SoldItem:
    epc: str
    gtin: str | None = None
    price: Decimal | None = None
    currency: str | None = None


def exit_key(store: str, epc: str) -> str:
    return rules.open_key(AlertType.EXIT_UNSOLD, store, None, epc)


async def mark_sold(
    connection: AsyncConnection,
    store: str,
    items: Sequence[SoldItem],
    *,
    sale_id: str,
    source: str,
    at: datetime,
) -> tuple[int, list[dict[str, Any]]]:
    """Record the EPCs as sold (those already sold stay as they were). Returns how many
    were new and the alert changes (cleared exit alerts) to announce after the commit."""
    if not items:
        return 0, []
    s = sold_items
    rows = [
        {
            "store_id": store,
            "epc": item.epc,
            "gtin": item.gtin,
            "sold_at": at,
            "sale_id": sale_id,
            "source": source,
            "price": item.price,
            "currency": item.currency,
        }
        for item in items
    ]
    result = await connection.execute(
        insert_for(connection, s)
        .on_conflict_do_nothing(index_elements=[s.c.store_id, s.c.epc])
        .returning(s.c.epc),
        rows,
    )
    marked = len(result.all())
    t = inventory_alerts
    cleared = (
        await connection.execute(
            update(t)
            .where(t.c.open_key.in_([exit_key(store, item.epc) for item in items]))
            .values(state=AlertState.CLEARED.value, cleared_at=at, open_key=None)
            .returning(*t.c)
        )
    ).all()
    return marked, [{**alert_data(row), "event": "cleared"} for row in cleared]


async def unsell(connection: AsyncConnection, store: str, epcs: Iterable[str]) -> int:
    """The EPCs are the store's again (a return read back in): no longer sold, so an exit
    read of one raises `exit_unsold` as for any unsold item. Returns how many were sold."""
    wanted = sorted(set(epcs))
    if not wanted:
        return 0
    s = sold_items
    result = await connection.execute(delete(s).where(s.c.store_id == store, s.c.epc.in_(wanted)))
    return int(result.rowcount or 0)


async def sold_among(connection: AsyncConnection, store: str, epcs: Iterable[str]) -> set[str]:
    s = sold_items
    wanted = sorted(set(epcs))
    if not wanted:
        return set()
    rows = await connection.execute(
        select(s.c.epc).where(s.c.store_id == store, s.c.epc.in_(wanted))
    )
    return {epc for (epc,) in rows}


async def last_price(
    connection: AsyncConnection, store: str, gtin: str | None
) -> tuple[Decimal | None, str | None]:
    """The price of the GTIN's latest priced sale in the store, if any."""
    if gtin is None:
        return None, None
    s = sold_items
    row = (
        await connection.execute(
            select(s.c.price, s.c.currency)
            .where(s.c.store_id == store, s.c.gtin == gtin, s.c.price.is_not(None))
            .order_by(s.c.sold_at.desc())
            .limit(1)
        )
    ).first()
    return (None, None) if row is None else (row.price, row.currency)


async def on_item_events(
    connection: AsyncConnection,
    store: str,
    events: Sequence[ItemEvent],
    zones: ZoneOptions,
    now: datetime,
) -> list[dict[str, Any]]:
    """Departures of one `rfid.events` message; returns the alert changes (raised
    `exit_unsold`) to announce after the commit."""
    leaving: list[tuple[ItemEvent, str, str | None]] = []  # (event, via, exit shelf)
    for event in events:
        if (
            event.kind in (ItemEventKind.ARRIVED, ItemEventKind.MOVED)
            and event.shelf is not None
            and zones.zone_of(store, event.shelf) == EXIT
        ):
            leaving.append((event, EXIT_VIA, event.shelf))
        elif event.kind is ItemEventKind.LEFT_STORE:
            leaving.append((event, LEFT_STORE_VIA, None))
    if not leaving:
        return []
    sold = await sold_among(connection, store, (event.epc for event, _via, _shelf in leaving))
    await connection.execute(
        item_departures.insert(),
        [
            {
                "store_id": store,
                "epc": event.epc,
                "gtin": event.gtin,
                "at": event.at,
                "via": via,
                "shelf": shelf,
                "sold": event.epc in sold,
            }
            for event, via, shelf in leaving
        ],
    )
    changes: list[dict[str, Any]] = []
    t = inventory_alerts
    for event, via, shelf in leaving:
        if via != EXIT_VIA or event.epc in sold:
            continue
        price, currency = await last_price(connection, store, event.gtin)
        row = (
            await connection.execute(
                insert_for(connection, t)
                .values(
                    type=AlertType.EXIT_UNSOLD.value,
                    store_id=store,
                    shelf=shelf,
                    gtin=event.gtin or "",
                    state=AlertState.RAISED.value,
                    count=1,
                    threshold=None,
                    raised_at=now,
                    details={
                        "epc": event.epc,
                        "seen_at": event.at.isoformat().replace("+00:00", "Z"),
                        "value": None if price is None else float(price),
                        "currency": currency,
                        "value_from": None if price is None else "last_sale",
                    },
                    open_key=exit_key(store, event.epc),
                )
                .on_conflict_do_nothing(index_elements=[t.c.open_key])
                .returning(*t.c)
            )
        ).first()
        if row is not None:  # None: its alert is still open from an earlier pass
            changes.append({**alert_data(row), "event": "raised"})
    return changes
