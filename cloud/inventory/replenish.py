"""Replenishment by exception: a staff task "move N of GTIN from the backroom to shelf X"
when the sales floor runs below its minimum while the backroom holds the GTIN.

Decided in the ingest batch (`before_commit`, after the alerts) from the one model's on-hand
per zone (cloud/inventory/stock.py), for the (store, GTIN) pairs whose counts the batch
changed that have a floor minimum. A minimum set through the API (`PUT /api/v1/stores/
{store}/floor-minimums`, the `floor_minimums` table) takes precedence over the config's
(`domains.inventory.floor_minimums`) for its store and GTIN; 0 switches it off. One indexed
read per store and batch finds the API's; the config costs nothing. A minimum without a
shelf sends the units to the sales-floor shelf holding the most of the GTIN (`sales_floor`
when none holds any: staff choose). The rule is `rules.replenish`:

- floor < minimum and backroom > 0: a task opens (one open task per store and GTIN, under
  the unique `open_key`, so a batch and an API call that race cannot open two);
- floor >= minimum: the open task is done (`closed_by` "rfid"): RFID saw the move;
- otherwise nothing changes; an open task's quantity is kept current quietly.

`POST /api/v1/tasks/{id}/done` closes a task by hand. If the floor is still short and the
backroom still holds the GTIN, the next count change opens a new one: the counts decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.api.timestamps import iso_utc
from cloud.inventory import rules
from cloud.inventory.config import BACKROOM, SALES_FLOOR, InventoryOptions
from cloud.inventory.rules import Action
from cloud.inventory.stock import levels
from cloud.inventory.tables import floor_minimums, replenishment_tasks
from cloud.state import schema
from cloud.state.db import insert_for

TASK = "task"  # the live-change kind
KIND = "replenish"
OPEN, DONE = "open", "done"


def task_data(row: Any) -> dict[str, Any]:
    """A task as the API and the live `task` change show it."""
    m = row._mapping
    return {
        "id": m["id"],
        "store": m["store_id"],
        "kind": m["kind"],
        "gtin": m["gtin"],
        "quantity": m["quantity"],
        "from_zone": m["from_zone"],
        "to_shelf": m["to_shelf"],
        "status": m["status"],
        "created_at": iso_utc(m["created_at"]),
        "closed_at": iso_utc(m["closed_at"]),
        "closed_by": m["closed_by"],
    }


def _open_key(store: str, gtin: str) -> str:
    return f"{KIND}|{store}|{gtin}"


@dataclass(frozen=True, slots=True)
class Minimum:
    gtin: str
    minimum: int
    shelf: str | None  # None: the floor shelf holding the most
    source: str  # api | config
    updated_at: datetime | None = None
    updated_by: str | None = None


async def stored_minimums(
    connection: AsyncConnection, store: str, gtins: Iterable[str] | None = None
) -> dict[str, Minimum]:
    """The minimums set through the API for the store (of `gtins`; None: all)."""
    f = floor_minimums
    query = select(f).where(f.c.store_id == store)
    if gtins is not None:
        query = query.where(f.c.gtin.in_(sorted(set(gtins))))
    return {
        row.gtin: Minimum(row.gtin, row.minimum, row.shelf, "api", row.updated_at, row.updated_by)
        for row in await connection.execute(query)
    }


async def stored_minimums_of(
    connection: AsyncConnection, stores: Iterable[str]
) -> dict[str, dict[str, Minimum]]:
    """The API-set minimums of several stores in one query (an ingest batch's stores)."""
    f = floor_minimums
    wanted = sorted(set(stores))
    found: dict[str, dict[str, Minimum]] = {store: {} for store in wanted}
    for start in range(0, len(wanted), 500):  # well under SQLite's bound on parameters
        rows = await connection.execute(
            select(f).where(f.c.store_id.in_(wanted[start : start + 500]))
        )
        for row in rows:
            found[row.store_id][row.gtin] = Minimum(
                row.gtin, row.minimum, row.shelf, "api", row.updated_at, row.updated_by
            )
    return found


async def replace_minimums(
    connection: AsyncConnection, store: str, minimums: Iterable[Minimum]
) -> None:
    """Make `minimums` the store's API-set ones (`PUT .../floor-minimums`)."""
    f = floor_minimums
    await connection.execute(delete(f).where(f.c.store_id == store))
    rows = [
        {
            "store_id": store,
            "gtin": m.gtin,
            "minimum": m.minimum,
            "shelf": m.shelf,
            "updated_at": m.updated_at,
            "updated_by": m.updated_by,
        }
        for m in minimums
    ]
    if rows:
        await connection.execute(f.insert(), rows)


class Replenisher:
    def __init__(self, options: InventoryOptions) -> None:
        self.options = options

    def configured(self, store: str) -> dict[str, Minimum]:
        """The config's minimums for the store: its own entry for a GTIN, else the
        every-store one."""
        out: dict[str, Minimum] = {}
        for entry in self.options.floor_minimums:
            if entry.store not in (None, store):
                continue
            chosen = self.options.floor_minimum(store, entry.gtin)
            assert chosen is not None
            out[entry.gtin] = Minimum(entry.gtin, chosen.minimum, chosen.shelf, "config")
        return out

    async def minimums(
        self,
        connection: AsyncConnection,
        store: str,
        gtins: Iterable[str] | None = None,
        *,
        stored: dict[str, Minimum] | None = None,
    ) -> dict[str, Minimum]:
        """The minimums in force in the store (of `gtins`; None: all): the API's, then
        the config's for the GTINs the API has none for. `stored`: the store's API-set
        minimums when the caller has read them already (`stored_minimums_of`)."""
        wanted = None if gtins is None else set(gtins)
        found = {
            gtin: m
            for gtin, m in self.configured(store).items()
            if wanted is None or gtin in wanted
        }
        if stored is None:
            stored = await stored_minimums(connection, store, wanted)
        found.update((gtin, m) for gtin, m in stored.items() if wanted is None or gtin in wanted)
        return dict(sorted(found.items()))

    async def evaluate(
        self,
        connection: AsyncConnection,
        store: str,
        gtins: Iterable[str] | None,
        now: datetime,
        *,
        stored: dict[str, Minimum] | None = None,
    ) -> list[dict[str, Any]]:
        """Open, update or close the store's tasks for `gtins` (None: every GTIN with a
        floor minimum); returns the task changes to announce after the commit."""
        minimums = await self.minimums(connection, store, gtins, stored=stored)
        watched = list(minimums)
        if not watched:
            return []
        t = replenishment_tasks
        found = await levels(
            connection,
            lambda _store: 0,
            zones=self.options.zones,
            keys=[(store, g) for g in watched],
        )
        open_rows = {
            row.gtin: row
            for row in await connection.execute(
                select(t).where(t.c.store_id == store, t.c.status == OPEN, t.c.gtin.in_(watched))
            )
        }
        changes: list[dict[str, Any]] = []
        for gtin in watched:
            minimum = minimums[gtin]
            by_zone = found[(store, gtin)].by_zone
            floor, backroom = by_zone.get(SALES_FLOOR, 0), by_zone.get(BACKROOM, 0)
            action = rules.replenish(floor, backroom, minimum.minimum)
            quantity = rules.units_to_move(floor, backroom, minimum.minimum)
            existing = open_rows.get(gtin)
            if existing is None and action is Action.OPEN:
                to_shelf = minimum.shelf or await self._fullest_floor_shelf(connection, store, gtin)
                row = (
                    await connection.execute(
                        insert_for(connection, t)
                        .values(
                            store_id=store,
                            kind=KIND,
                            gtin=gtin,
                            quantity=quantity,
                            from_zone=BACKROOM,
                            to_shelf=to_shelf,
                            status=OPEN,
                            created_at=now,
                            open_key=_open_key(store, gtin),
                        )
                        .on_conflict_do_nothing(index_elements=[t.c.open_key])
                        .returning(*t.c)
                    )
                ).first()
                if row is not None:  # None: opened a moment ago by someone else
                    changes.append({**task_data(row), "event": "opened"})
            elif existing is not None and action is Action.CLOSE:
                row = await close(connection, existing.id, "rfid", now)
                if row is not None:
                    changes.append({**task_data(row), "event": "done"})
            elif existing is not None and quantity > 0 and existing.quantity != quantity:
                await connection.execute(
                    update(t).where(t.c.id == existing.id).values(quantity=quantity)
                )
        return changes

    async def _fullest_floor_shelf(self, connection: AsyncConnection, store: str, gtin: str) -> str:
        inv = schema.inventory
        rows = await connection.execute(
            select(inv.c.shelf, inv.c["count"]).where(
                inv.c.store_id == store, inv.c.gtin == gtin, inv.c["count"] > 0
            )
        )
        zones = self.options.zones
        floor = [
            (int(count), shelf)
            for shelf, count in rows
            if zones.zone_of(store, shelf) == SALES_FLOOR
        ]
        # most units first, then the lowest id, so the same counts always name one shelf
        return min(floor, key=lambda c: (-c[0], c[1]))[1] if floor else SALES_FLOOR


async def close(connection: AsyncConnection, task_id: int, by: str, now: datetime) -> Any:
    """Mark an open task done; None if it was not open."""
    t = replenishment_tasks
    return (
        await connection.execute(
            update(t)
            .where(t.c.id == task_id, t.c.status == OPEN)
            .values(status=DONE, closed_at=now, closed_by=by, open_key=None)
            .returning(*t.c)
        )
    ).first()
