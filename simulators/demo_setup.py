"""What a retailer configures before opening the demo's stores, through the cloud's API:

- **planograms**: each shelf holds the products it was stocked with (as the cloud first
  counted them), so an item a shopper leaves on a wrong shelf raises `misplaced`;
- **reorder points**: per product, one unit under what the store first counted, so the
  first sale of a product raises `low_stock` (a demo wants alerts within a minute; a real
  store sets them from its sales);
- **campaigns**: one per store, on entering any BLE zone, offering the store's products in
  stock; caps and cooldown as printed in `CAMPAIGN` (disclosed in docs/demo.md).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx

from simulators.ble.world import default_floor_plan

CAMPAIGN: dict[str, Any] = {
    "title": "Welcome back: 10 % off today",
    "body": "Show this in store at the checkout",
    "trigger": "enter",
    "per_day_cap": 20,
    "per_visit_cap": 3,
    "zone_cooldown_s": 20,
    "holdout_pct": 0,
}


class SetupError(Exception):
    """The cloud refused part of the demo's set-up; the message says which and why."""


async def configure_store(api: httpx.AsyncClient, ops_key: str, store: str) -> dict[str, int]:
    """Planogram, reorder points and campaign of one store, from its first counts.
    Returns what was configured (shelves, reorder points)."""
    headers = {"X-API-Key": ops_key}
    inventory = await _ok(api.get(f"/api/v1/stores/{store}/inventory", headers=headers))
    shelves: dict[str, set[str]] = defaultdict(set)
    on_hand: dict[str, int] = defaultdict(int)
    for row in inventory:
        if row["count"] > 0:
            shelves[row["shelf"]].add(row["gtin"])
            on_hand[row["gtin"]] += row["count"]
    if not shelves:
        raise SetupError(f"store {store} has no counted items yet")
    await _ok(
        api.put(
            f"/api/v1/stores/{store}/planogram",
            headers=headers,
            json={"shelves": {shelf: sorted(gtins) for shelf, gtins in shelves.items()}},
        )
    )
    points = [
        {"gtin": gtin, "reorder_point": max(0, count - 1)}
        for gtin, count in sorted(on_hand.items())
    ]
    await _ok(
        api.put(f"/api/v1/stores/{store}/reorder-points", headers=headers, json={"items": points})
    )
    zones = [zone.id for zone in default_floor_plan().zones]
    await _ok(
        api.put(
            f"/api/v1/campaigns/demo-{store}",
            headers=headers,
            json={**CAMPAIGN, "zones": zones, "stores": [store], "gtins": sorted(on_hand)},
        )
    )
    return {"shelves": len(shelves), "reorder_points": len(points)}


async def _ok(call: Any) -> Any:
    response: httpx.Response = await call
    if response.status_code >= 300:
        raise SetupError(
            f"{response.request.method} {response.request.url.path}: {response.status_code}"
            f" {response.text[:300]}"
        )
    return response.json() if response.content else None
