"""A store with inventory and lockers on a real database: the shelves come through the real
ingest applier, orders and availability through the API (in-process ASGI)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.api.app import create_app
from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.context import CloudContext
from cloud.domains import DomainContext
from cloud.inventory import create_domain as create_inventory
from cloud.lockers import create_domain as create_lockers
from cloud.lockers.domain import LockersDomain
from cloud.metrics import CloudMetrics
from protocols.messages import Birth, ShelfCount
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.cloud.harness import StateHarness

STORE, NODE, BANK = "store-042", "pi-1", "bank-1"  # STAFF_KEY may see store-042
GTIN, OTHER_GTIN = "09506000134352", "09506000134369"
KEY_ENV = "STOREGATE_TEST_RESERVATIONS_KEY"
SAFETY = 1


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Shop:
    harness: StateHarness
    http: httpx.AsyncClient
    bus: LiveBus
    birth_seq: int = 0
    lockers: LockersDomain | None = None

    async def shelves(self, **counts: int) -> None:
        """The node's birth: these GTINs (by name: GTIN, OTHER_GTIN) on shelf-1."""
        names = {"GTIN": GTIN, "OTHER_GTIN": OTHER_GTIN}
        await self.shelves_of({names[name]: count for name, count in counts.items()})

    async def shelves_of(self, counts: dict[str, int]) -> None:
        """The node's birth: GTIN -> count on shelf-1 (every other count gone)."""
        self.birth_seq += 1
        outcome = await self.harness.feed(
            Birth(
                store=STORE,
                node=NODE,
                seq=self.birth_seq - 1,
                bd_seq=self.birth_seq,
                version="1",
                shelves=[
                    ShelfCount(shelf="shelf-1", gtin=gtin, count=count)
                    for gtin, count in counts.items()
                ],
            )
        )
        assert outcome.dead_lettered == 0
        for change in outcome.changes:  # as the consumer does after the commit
            self.bus.publish(change)

    async def order(self, *lines: tuple[str, int]) -> httpx.Response:
        return await self.http.post(
            f"/api/v1/stores/{STORE}/orders",
            headers=bearer(SHOPPER_KEY),
            json={"items": [{"gtin": g, "quantity": q} for g, q in lines]},
        )

    async def move(self, order_id: str, state: str) -> None:
        response = await self.http.post(
            f"/api/v1/orders/{order_id}/state", headers=bearer(STAFF_KEY), json={"state": state}
        )
        assert response.status_code == 200, response.text

    async def stock(self, gtin: str = GTIN) -> dict[str, Any]:
        """The store's row of `/availability/{gtin}`, checked equal to the bulk route's."""
        one = await self.http.get(f"/api/v1/availability/{gtin}", headers=bearer(OPS_KEY))
        bulk = await self.http.get(
            "/api/v1/availability", params={"gtins": gtin}, headers=bearer(OPS_KEY)
        )
        assert one.status_code == bulk.status_code == 200, (one.text, bulk.text)
        assert bulk.json()["items"] == [one.json()]
        rows = [s for s in one.json()["stores"] if s["store"] == STORE]
        assert len(rows) == 1, one.json()
        row: dict[str, Any] = rows[0]
        return row


@pytest.fixture
async def shop(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Shop]:
    async for made in open_shop(database_url, tmp_path, monkeypatch):
        yield made


async def open_shop(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    inventory_options: dict[str, Any] | None = None,
    lockers_options: dict[str, Any] | None = None,
) -> AsyncIterator[Shop]:
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
    config = cloud_config(1883, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {
        "inventory": {"availability": {"safety_stock": SAFETY}, **(inventory_options or {})},
        "lockers": {
            "banks": [{"store": STORE, "node": NODE, "bank": BANK, "codes_key_env": KEY_ENV}],
            **(lockers_options or {}),
        },
    }
    settings = CloudSettings(**config)
    inventory = create_inventory(settings, settings.domains["inventory"])
    lockers = create_lockers(settings, settings.domains["lockers"])
    harness = StateHarness(database_url, {STORE: [NODE]}, domains=[inventory, lockers])
    await harness.start()
    bus, metrics = LiveBus(), CloudMetrics()
    await lockers.start(DomainContext(settings, harness.engine, bus, metrics, lambda t, p: None))
    context = CloudContext(settings, harness.engine, harness.registry, bus, metrics, lambda: True)
    app = create_app(context, routers=[inventory.router(), lockers.router()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as http:
        yield Shop(harness, http, bus, lockers=lockers)
    await lockers.stop()
    await harness.close()
