"""Reorder suggestions per store and GTIN from sales velocity and supplier lead time.

The classic reorder point with safety stock for variable demand and a fixed lead time:

    d  = mean units per day over the window (sales + unsold departures)
    sd = standard deviation of the daily units over the window (days without any count)
    L  = supplier lead time in days (`reorder.lead_times`, else `lead_time_days`)
    safety stock   SS  = z · sd · √L            (z = `service_z`, 1.65 ≈ 95 % cycle service)
    reorder point  ROP = d · L + SS              (demand during the lead time + safety stock)
    position           = on hand - reserved      (what is left for walk-in shoppers)
    order when position <= ROP, up to ROP + d · R (R = `review_days`): quantity = that - position

Demand is what left the shelves for good: EPCs sold (POS, collected orders) and EPCs that
departed unsold (through an exit, or unseen in the store for `left_store_s`), each EPC once.
A sold EPC that departs (before or after its sale reached the cloud) counts once, as a sale.
Every figure of the formula comes back with the suggestion, so a buyer can see why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.api.timestamps import as_utc
from cloud.inventory.config import InventoryOptions
from cloud.inventory.stock import levels
from cloud.inventory.tables import item_departures, sold_items

FORMULA = (
    "reorder_point = daily_demand * lead_time_days + service_z * daily_std * sqrt(lead_time_days)"
)


@dataclass(frozen=True, slots=True)
class Demand:
    sold: int
    departed: int
    daily: list[int]  # units per day, oldest first, `window_days` of them


def suggest(
    demand: Demand,
    on_hand: int,
    reserved: int,
    lead_time_days: float,
    service_z: float,
    review_days: float,
) -> dict[str, Any]:
    """The formula above for one GTIN, with every figure it used."""
    days = len(demand.daily)
    mean = sum(demand.daily) / days
    std = math.sqrt(sum((units - mean) ** 2 for units in demand.daily) / days)
    during_lead = mean * lead_time_days
    safety = service_z * std * math.sqrt(lead_time_days)
    reorder_point = math.ceil(during_lead + safety)
    position = on_hand - reserved
    order_up_to = math.ceil(reorder_point + mean * review_days)
    reorder = position <= reorder_point and mean > 0
    quantity = max(0, order_up_to - position) if reorder else 0
    return {
        "reorder": reorder,
        "quantity": quantity,
        "reasoning": {
            "units_sold": demand.sold,
            "units_departed_unsold": demand.departed,
            "window_days": days,
            "daily_demand": round(mean, 3),
            "daily_std": round(std, 3),
            "lead_time_days": lead_time_days,
            "demand_during_lead_time": round(during_lead, 2),
            "service_z": service_z,
            "safety_stock": round(safety, 2),
            "reorder_point": reorder_point,
            "on_hand": on_hand,
            "reserved": reserved,
            "position": position,
            "order_up_to": order_up_to,
            "review_days": review_days,
            "why": (
                f"{demand.sold + demand.departed} units left in {days} days"
                f" ({mean:.2f}/day, sd {std:.2f}); over a {lead_time_days:g}-day lead time"
                f" that is {during_lead:.1f} + safety stock {safety:.1f}"
                f" = reorder point {reorder_point}; position {position}"
                + (
                    f" <= {reorder_point}: order {quantity} (up to {order_up_to})"
                    if reorder
                    else f" > {reorder_point}: no order"
                    if mean > 0
                    else ": no demand, no order"
                )
            ),
        },
    }


async def demand_by_gtin(
    connection: AsyncConnection, store: str, since: datetime, days: int
) -> dict[str, Demand]:
    """Per GTIN, the units sold and departed unsold per day since `since`."""
    s, d = sold_items, item_departures
    daily: dict[str, list[int]] = {}
    sold: dict[str, int] = {}
    departed: dict[str, int] = {}

    def count(gtin: str, at: datetime, into: dict[str, int]) -> None:
        day = min(days - 1, max(0, (as_utc(at) - since).days))
        daily.setdefault(gtin, [0] * days)[day] += 1
        into[gtin] = into.get(gtin, 0) + 1

    for gtin, at in await connection.execute(
        select(s.c.gtin, s.c.sold_at).where(
            s.c.store_id == store, s.c.sold_at >= since, s.c.gtin.is_not(None)
        )
    ):
        count(gtin, at, sold)
    # an EPC that left unsold counts once (a tag lingering at the door is seen again and
    # again), and not at all once a sale lists it (the POS synced late: it is a sale)
    sold_since = select(s.c.epc).where(s.c.store_id == store, s.c.epc == d.c.epc).exists()
    seen: set[str] = set()
    for epc, gtin, at in await connection.execute(
        select(d.c.epc, d.c.gtin, d.c.at)
        .where(
            d.c.store_id == store,
            d.c.at >= since,
            d.c.sold.is_(False),
            d.c.gtin.is_not(None),
            ~sold_since,
        )
        .order_by(d.c.id)
    ):
        if epc not in seen:
            seen.add(epc)
            count(gtin, at, departed)
    return {
        gtin: Demand(sold.get(gtin, 0), departed.get(gtin, 0), units)
        for gtin, units in daily.items()
    }


async def suggestions(
    connection: AsyncConnection, options: InventoryOptions, store: str, now: datetime
) -> list[dict[str, Any]]:
    """Every GTIN the store counted or sold in the window, those to reorder first."""
    reorder = options.reorder
    since = now - timedelta(days=reorder.window_days)
    demand = await demand_by_gtin(connection, store, since, reorder.window_days)
    found = await levels(connection, lambda _store: 0, zones=options.zones, stores=[store])
    gtins = sorted(set(demand) | {gtin for _store, gtin in found})
    empty = Demand(0, 0, [0] * reorder.window_days)
    out = []
    for gtin in gtins:
        level = found.get((store, gtin))
        suggestion = suggest(
            demand.get(gtin, empty),
            level.on_hand if level else 0,
            level.reserved if level else 0,
            reorder.lead_time(store, gtin),
            reorder.service_z,
            reorder.review_days,
        )
        out.append({"gtin": gtin, **suggestion})
    out.sort(key=lambda item: (not item["reorder"], item["gtin"]))
    return out
