"""Locker KPIs over a period, computed from the order transitions and the alarms.

- `order_to_ready_s`: from `created` to `ready_for_pickup`, for orders that became ready
  in the period (avg, p50, max);
- `pickup_rate`: collected / (collected + expired) among orders that ended their hold in
  the period (None when none did);
- `dwell_s`: from `ready_for_pickup` to `collected` (time the parcel waited in the locker),
  for orders collected in the period (avg, p50, max);
- `utilisation`: compartment-seconds held by an order (from `assigned` until the order
  leaves the locker) / (compartments known in the store x period seconds);
- `door_alarms`: alarm counts per kind (`forced_open`, `door_ajar`, `code_burst_alarm`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.api.timestamps import iso_utc
from cloud.lockers import tables
from cloud.lockers.machine import OrderState
from cloud.lockers.views import as_utc

S = OrderState
# Leaving any of these ends an order's time in a compartment.
_HOLDING = frozenset({S.ASSIGNED, S.READY_FOR_PICKUP, S.EXPIRED})


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "avg": None, "p50": None, "max": None}
    return {
        "count": len(values),
        "avg": round(statistics.fmean(values), 3),
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


async def compute(
    connection: AsyncConnection, store: str, since: datetime, until: datetime
) -> dict[str, Any]:
    t = tables.transitions
    # Orders with any transition up to `until` and still open or touched since `since`.
    touched = (
        select(t.c.order_id)
        .where(t.c.store_id == store, t.c.at >= since, t.c.at < until)
        .distinct()
    )
    open_orders = select(tables.orders.c.order_id).where(
        tables.orders.c.store_id == store,
        tables.orders.c.state.in_([s.value for s in _HOLDING]),
    )
    rows = (
        await connection.execute(
            select(t.c.order_id, t.c.to_state, t.c.at)
            .where(t.c.order_id.in_(touched.union(open_orders)), t.c.at < until)
            .order_by(t.c.order_id, t.c.at, t.c.id)
        )
    ).all()
    history: dict[str, list[tuple[OrderState, datetime]]] = defaultdict(list)
    for row in rows:
        history[row.order_id].append((S(row.to_state), as_utc(row.at)))

    to_ready: list[float] = []
    dwell: list[float] = []
    collected = expired = 0
    held_s = 0.0
    for steps in history.values():
        first: dict[OrderState, datetime] = {}
        for state, at in steps:
            first.setdefault(state, at)
        ready = first.get(S.READY_FOR_PICKUP)
        created = first.get(S.CREATED)
        if ready is not None and since <= ready and created is not None:
            to_ready.append((ready - created).total_seconds())
        done = first.get(S.COLLECTED)
        if done is not None and since <= done:
            collected += 1
            if ready is not None:
                dwell.append((done - ready).total_seconds())
        gone = first.get(S.EXPIRED)
        if gone is not None and since <= gone:
            expired += 1
        held_s += _held_seconds(steps, since, until)

    c = tables.compartments
    compartments = (
        await connection.execute(select(func.count()).select_from(c).where(c.c.store_id == store))
    ).scalar_one()
    period_s = (until - since).total_seconds()
    a = tables.alarms
    alarm_rows = (
        await connection.execute(
            select(a.c.kind, func.count())
            .where(a.c.store_id == store, a.c.at >= since, a.c.at < until)
            .group_by(a.c.kind)
        )
    ).all()
    alarms = {"forced_open": 0, "door_ajar": 0, "code_burst_alarm": 0}
    alarms.update({kind: int(n) for kind, n in alarm_rows})
    ended = collected + expired
    return {
        "store": store,
        "since": iso_utc(since),
        "until": iso_utc(until),
        "order_to_ready_s": _summary(to_ready),
        "pickup_rate": round(collected / ended, 4) if ended else None,
        "collected": collected,
        "expired": expired,
        "dwell_s": _summary(dwell),
        "utilisation": (
            round(held_s / (compartments * period_s), 6) if compartments and period_s > 0 else None
        ),
        "compartments": compartments,
        "door_alarms": alarms,
    }


def _held_seconds(
    steps: list[tuple[OrderState, datetime]], since: datetime, until: datetime
) -> float:
    """Seconds within [since, until) the order held a compartment."""
    total = 0.0
    start: datetime | None = None
    for state, at in steps:
        if state in _HOLDING and start is None:
            start = at
        elif state not in _HOLDING and start is not None:
            total += _overlap(start, at, since, until)
            start = None
    if start is not None:
        total += _overlap(start, until, since, until)
    return total


def _overlap(a: datetime, b: datetime, since: datetime, until: datetime) -> float:
    return max(0.0, (min(b, until) - max(a, since)).total_seconds())
