"""Evaluate the alert rules against the state store and write the alerts.

`AlertEvaluator.evaluate(connection, store, scope)` runs inside the caller's transaction
(the ingest batch, or an API call that changed a reorder point or a planogram). `scope` is
the set of (shelf, GTIN) pairs whose count changed, or None for the whole store (after a
birth or snapshot replaced shelves, or after a configuration change). It returns the alert
changes to announce on the live bus, after the caller's commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import BindParameter

from cloud.inventory import rules
from cloud.inventory.config import InventoryOptions
from cloud.inventory.rules import Action, AlertState, AlertType
from cloud.inventory.tables import inventory_alerts, planograms, reorder_points
from cloud.state import schema
from cloud.state.db import insert_for
from protocols.messages import utc_now

IN_CHUNK = 500  # values per IN (...) list: far below SQLite's and asyncpg's limits

# The reads run for every store in every ingest batch, so they are built once, with bound
# parameters: building a SQLAlchemy statement (and its cache key) per call cost more than
# running it.
_STORE: BindParameter[str] = bindparam("store")
_KEYS: BindParameter[list[str]] = bindparam("keys", expanding=True)
_inv = schema.inventory
_COUNTS = select(_inv.c.shelf, _inv.c.gtin, _inv.c["count"]).where(_inv.c.store_id == _STORE)
_TOTALS = (
    select(_inv.c.gtin, func.sum(_inv.c["count"]).label("total"))
    .where(_inv.c.store_id == _STORE, _inv.c.gtin.in_(_KEYS))
    .group_by(_inv.c.gtin)
)
_rp = reorder_points
_POINTS = select(_rp.c.shelf, _rp.c.gtin, _rp.c.reorder_point).where(_rp.c.store_id == _STORE)
_POINTS_OF_GTINS = _POINTS.where(_rp.c.gtin.in_(_KEYS))
_PLANS = select(planograms.c.shelf, planograms.c.gtins).where(planograms.c.store_id == _STORE)
_PLANS_OF_SHELVES = _PLANS.where(planograms.c.shelf.in_(_KEYS))
_OPEN_ALERTS = select(inventory_alerts).where(
    inventory_alerts.c.store_id == _STORE,
    inventory_alerts.c.state == AlertState.RAISED.value,
)

Scope = set[tuple[str, str]]  # (shelf, gtin)
AlertKey = tuple[AlertType, str | None, str]  # (type, shelf or None = store-wide, gtin)
EpcLookup = Callable[[str, str, str], list[str]]  # (store, shelf, gtin) -> recent EPCs


@dataclass(slots=True)
class Decision:
    action: Action
    count: int
    threshold: int | None = None


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    items = sorted(set(values))
    for start in range(0, len(items), IN_CHUNK):
        yield items[start : start + IN_CHUNK]


def alert_data(row: Any) -> dict[str, Any]:
    """An alert as the API and the live `alert` change show it."""
    m = row._mapping
    return {
        "id": m["id"],
        "type": m["type"],
        "state": m["state"],
        "store": m["store_id"],
        "shelf": m["shelf"],
        "gtin": m["gtin"],
        "count": m["count"],
        "reorder_point": m["threshold"],
        "raised_at": _iso(m["raised_at"]),
        "cleared_at": _iso(m["cleared_at"]),
        "acknowledged_at": _iso(m["acknowledged_at"]),
        "acknowledged_by": m["acknowledged_by"],
        "details": m["details"],
    }


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive UTC
        return value.isoformat() + "Z"
    return value.isoformat().replace("+00:00", "Z")


def _reads(
    whole: Any, of_keys: Any, store: str, keys: set[str] | None
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """The statement and parameters that read a store's rows: all, or those of `keys`."""
    if keys is None:
        yield whole, {"store": store}
    else:
        for chunk in _chunks(keys):
            yield of_keys, {"store": store, "keys": chunk}


class AlertEvaluator:
    def __init__(self, options: InventoryOptions, recent_epcs: EpcLookup | None = None) -> None:
        self.options = options
        self.recent_epcs = recent_epcs

    async def evaluate(
        self,
        connection: AsyncConnection,
        store: str,
        changed: Mapping[tuple[str, str], int] | None,
    ) -> list[dict[str, Any]]:
        """`changed`: the (shelf, GTIN) counts this batch wrote, or None for the whole store."""
        if changed is not None and not changed:
            return []
        scope = None if changed is None else set(changed)
        gtins = None if scope is None else {gtin for _shelf, gtin in scope}
        shelves = None if scope is None else {shelf for shelf, _gtin in scope}
        points = await self._reorder_points(connection, store, gtins)
        plans = await self._planograms(connection, store, shelves)
        open_rows = await self._open_alerts(connection, store, scope)
        default = self.options.default_reorder_point
        if changed is not None and not (points or plans or open_rows or default is not None):
            return []  # the common case of a store without rules: three indexed reads
        counts = dict(changed) if changed is not None else await self._counts(connection, store)

        # store-wide low stock: the GTINs with a reorder point or an open alert (whole
        # store: also every GTIN on its shelves, for the default reorder point)
        candidates = set(gtins) if gtins is not None else {g for _s, g in counts}
        if default is not None:
            for gtin in candidates:
                points.setdefault((None, gtin), default)
        store_wide = {g for (s, g) in points if s is None}
        store_wide |= {g for (kind, s, g) in open_rows if kind is AlertType.LOW_STOCK and s is None}
        if gtins is not None:
            store_wide &= gtins
        totals = await self._totals(connection, store, store_wide)
        decisions: dict[AlertKey, Decision] = {}
        for gtin in store_wide:
            point, on_hand = points.get((None, gtin)), totals.get(gtin, 0)
            decisions[(AlertType.LOW_STOCK, None, gtin)] = Decision(
                rules.low_stock(on_hand, point, self.options.hysteresis), on_hand, point
            )
        # per-shelf low stock and misplaced items
        pairs = set(counts)
        if scope is None:
            pairs |= {(s, g) for (s, g) in points if s is not None}
        for shelf, gtin in pairs:
            count = counts.get((shelf, gtin), 0)
            point = points.get((shelf, gtin))
            if point is not None:
                decisions[(AlertType.LOW_STOCK, shelf, gtin)] = Decision(
                    rules.low_stock(count, point, self.options.hysteresis), count, point
                )
            if shelf in plans:
                decisions[(AlertType.MISPLACED, shelf, gtin)] = Decision(
                    rules.misplaced(count, gtin, plans[shelf]), count
                )
        # an open alert outside the keys above (its reorder point or planogram was removed,
        # its shelf emptied by a snapshot): evaluate it too
        for key in open_rows:
            if key not in decisions:
                alert_type, on_shelf, gtin = key
                count = totals.get(gtin, 0) if on_shelf is None else counts.get((on_shelf, gtin), 0)
                if alert_type is AlertType.LOW_STOCK:
                    point = points.get((on_shelf, gtin))
                    action = rules.low_stock(count, point, self.options.hysteresis)
                else:
                    point, action = None, rules.misplaced(count, gtin, plans.get(on_shelf or ""))
                decisions[key] = Decision(action, count, point)
        return await self._apply(connection, store, decisions, open_rows, plans)

    # ------------------------------------------------------------------ reads

    async def _counts(self, connection: AsyncConnection, store: str) -> dict[tuple[str, str], int]:
        rows = await connection.execute(_COUNTS, {"store": store})
        return {(row.shelf, row.gtin): row._mapping["count"] for row in rows}

    async def _totals(
        self, connection: AsyncConnection, store: str, gtins: set[str]
    ) -> dict[str, int]:
        totals: dict[str, int] = {}
        for chunk in _chunks(gtins):
            for row in await connection.execute(_TOTALS, {"store": store, "keys": chunk}):
                totals[row.gtin] = int(row.total or 0)
        return totals

    async def _reorder_points(
        self, connection: AsyncConnection, store: str, gtins: set[str] | None
    ) -> dict[tuple[str | None, str], int]:
        """(shelf or None, gtin) -> reorder point: the API's rows over the config's."""
        points: dict[tuple[str | None, str], int] = {}
        options = self.options
        for entry in options.reorder_points:
            if entry.store in (None, store) and (gtins is None or entry.gtin in gtins):
                point = options.configured_point(store, entry.gtin, entry.shelf)
                if point is not None:
                    points[(entry.shelf, entry.gtin)] = point
        for query, params in _reads(_POINTS, _POINTS_OF_GTINS, store, gtins):
            for row in await connection.execute(query, params):
                points[(row.shelf or None, row.gtin)] = row.reorder_point
        return points

    async def _planograms(
        self, connection: AsyncConnection, store: str, shelves: set[str] | None
    ) -> dict[str, frozenset[str]]:
        plans: dict[str, frozenset[str]] = {}
        for query, params in _reads(_PLANS, _PLANS_OF_SHELVES, store, shelves):
            for row in await connection.execute(query, params):
                plans[row.shelf] = frozenset(row.gtins)
        return plans

    async def _open_alerts(
        self, connection: AsyncConnection, store: str, scope: Scope | None
    ) -> dict[AlertKey, Any]:
        """The store's open alerts (few: one query on the store/state index), those that
        concern `scope` only unless None."""
        gtins = None if scope is None else {gtin for _shelf, gtin in scope}
        found: dict[AlertKey, Any] = {}
        for row in await connection.execute(_OPEN_ALERTS, {"store": store}):
            if scope is not None and gtins is not None:
                pair = (row.shelf, row.gtin)
                if row.shelf is None and row.gtin not in gtins:
                    continue
                if row.shelf is not None and pair not in scope:
                    continue
            found[(AlertType(row.type), row.shelf, row.gtin)] = row
        return found

    # ------------------------------------------------------------------ writes

    async def _apply(
        self,
        connection: AsyncConnection,
        store: str,
        decisions: dict[AlertKey, Decision],
        open_rows: dict[AlertKey, Any],
        plans: dict[str, frozenset[str]],
    ) -> list[dict[str, Any]]:
        t = inventory_alerts
        now = utc_now()
        changes: list[dict[str, Any]] = []
        for key in sorted(decisions, key=_sort_key):
            decision = decisions[key]
            alert_type, shelf, gtin = key
            existing = open_rows.get(key)
            if existing is None and decision.action is Action.OPEN:
                details = self._details(store, key, decision, plans)
                insert = (
                    insert_for(connection, t)
                    .values(
                        type=alert_type.value,
                        store_id=store,
                        shelf=shelf,
                        gtin=gtin,
                        state=AlertState.RAISED.value,
                        count=decision.count,
                        threshold=decision.threshold,
                        raised_at=now,
                        details=details,
                        open_key=rules.open_key(alert_type, store, shelf, gtin),
                    )
                    .on_conflict_do_nothing(index_elements=[t.c.open_key])
                    .returning(*t.c)
                )
                row = (await connection.execute(insert)).first()
                if row is not None:  # None: someone else raised it a moment ago
                    changes.append({**alert_data(row), "event": "raised"})
            elif existing is not None and decision.action is Action.CLOSE:
                row = (
                    await connection.execute(
                        update(t)
                        .where(t.c.id == existing.id, t.c.open_key.is_not(None))
                        .values(
                            state=AlertState.CLEARED.value,
                            cleared_at=now,
                            open_key=None,
                            count=decision.count,
                        )
                        .returning(*t.c)
                    )
                ).first()
                if row is not None:
                    changes.append({**alert_data(row), "event": "cleared"})
            elif existing is not None and (
                existing._mapping["count"] != decision.count
                or (decision.threshold is not None and existing.threshold != decision.threshold)
            ):
                # still open: keep its current count (and reorder point) up to date quietly
                await connection.execute(
                    update(t)
                    .where(t.c.id == existing.id)
                    .values(
                        count=decision.count,
                        threshold=decision.threshold
                        if decision.threshold is not None
                        else existing.threshold,
                    )
                )
        return changes

    def _details(
        self,
        store: str,
        key: AlertKey,
        decision: Decision,
        plans: dict[str, frozenset[str]],
    ) -> dict[str, Any]:
        alert_type, shelf, gtin = key
        if alert_type is AlertType.LOW_STOCK:
            return {
                "on_hand": decision.count,
                "reorder_point": decision.threshold,
                "clears_above": (decision.threshold or 0) + self.options.hysteresis,
                "scope": "store" if shelf is None else "shelf",
            }
        assert shelf is not None
        details: dict[str, Any] = {
            "count": decision.count,
            "planned_on": sorted(s for s, gtins in plans.items() if gtin in gtins),
        }
        if self.recent_epcs is not None:
            epcs = self.recent_epcs(store, shelf, gtin)
            if epcs:
                details["epcs"] = epcs
        return details


def _sort_key(key: AlertKey) -> tuple[str, str, str]:
    return (key[0].value, key[1] or "", key[2])


def changed_counts(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """The batch's inventory rows ({"shelf", "gtin", "count"}) as (shelf, gtin) -> count."""
    return {(row["shelf"], row["gtin"]): row["count"] for row in rows}
