"""Orders reserve stock atomically: available = on hand - reserved - safety stock, the same
figure in every route, on SQLite and on a real PostgreSQL. The orders come through the API
(in-process ASGI) and the shelves through the real ingest applier."""

from __future__ import annotations

import asyncio
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
from cloud.metrics import CloudMetrics
from protocols.messages import Birth, ShelfCount
from tests.cloud.cloudproc import OPS_KEY, SHOPPER_KEY, STAFF_KEY, cloud_config
from tests.cloud.conftest import database_url, postgres_server  # noqa: F401  (fixtures)
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
    birth_seq: int = 0

    async def shelves(self, **counts: int) -> None:
        """The node's birth: these GTINs (by name: GTIN, OTHER_GTIN) on shelf-1."""
        self.birth_seq += 1
        names = {"GTIN": GTIN, "OTHER_GTIN": OTHER_GTIN}
        outcome = await self.harness.feed(
            Birth(
                store=STORE,
                node=NODE,
                seq=self.birth_seq - 1,
                bd_seq=self.birth_seq,
                version="1",
                shelves=[
                    ShelfCount(shelf="shelf-1", gtin=names[name], count=count)
                    for name, count in counts.items()
                ],
            )
        )
        assert outcome.dead_lettered == 0

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
    database_url: str,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Shop]:
    monkeypatch.setenv(KEY_ENV, secrets.token_hex(32))
    config = cloud_config(1883, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {
        "inventory": {"availability": {"safety_stock": SAFETY}},
        "lockers": {
            "banks": [{"store": STORE, "node": NODE, "bank": BANK, "codes_key_env": KEY_ENV}]
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
        yield Shop(harness, http)
    await lockers.stop()
    await harness.close()


async def test_100_concurrent_orders_for_10_units_accept_exactly_10(shop: Shop) -> None:
    await shop.shelves(GTIN=10 + SAFETY)
    assert (await shop.stock())["available"] == 10

    responses = await asyncio.gather(*(shop.order((GTIN, 1)) for _ in range(100)))

    statuses = [r.status_code for r in responses]
    assert statuses.count(201) == 10, statuses
    assert statuses.count(409) == 90, statuses
    refused = next(r for r in responses if r.status_code == 409).json()
    assert refused["error"] == "insufficient_stock"
    assert "1 wanted, 0 available" in refused["detail"]
    row = await shop.stock()
    assert (row["on_hand"], row["reserved"], row["available"]) == (11, 10, 0)


async def test_exactly_what_is_available_is_accepted_and_one_more_is_not(shop: Shop) -> None:
    await shop.shelves(GTIN=5 + SAFETY)
    too_many = await shop.order((GTIN, 6))
    assert too_many.status_code == 409, too_many.text
    assert (
        "6 wanted, 5 available (on hand 6, reserved 0, safety stock 1)" in too_many.json()["detail"]
    )
    exact = await shop.order((GTIN, 5))
    assert exact.status_code == 201, exact.text
    assert (await shop.stock())["available"] == 0


async def test_an_order_reserves_all_its_lines_or_none(shop: Shop) -> None:
    await shop.shelves(GTIN=4 + SAFETY, OTHER_GTIN=1 + SAFETY)
    # the same GTIN on two lines counts twice; OTHER_GTIN is short by one
    refused = await shop.order((GTIN, 2), (GTIN, 1), (OTHER_GTIN, 2))
    assert refused.status_code == 409, refused.text
    assert OTHER_GTIN in refused.json()["detail"]
    assert GTIN + ":" not in refused.json()["detail"]
    assert (await shop.stock(GTIN))["reserved"] == 0  # nothing held for the good lines
    accepted = await shop.order((GTIN, 2), (GTIN, 1), (OTHER_GTIN, 1))
    assert accepted.status_code == 201, accepted.text
    assert (await shop.stock(GTIN))["reserved"] == 3
    assert (await shop.stock(OTHER_GTIN))["available"] == 0


async def test_the_reservation_ends_when_the_goods_leave_the_shelves_or_the_order_ends(
    shop: Shop,
) -> None:
    await shop.shelves(GTIN=10 + SAFETY)
    picked = (await shop.order((GTIN, 3))).json()["order_id"]
    cancelled = (await shop.order((GTIN, 2))).json()["order_id"]
    assert (await shop.stock())["reserved"] == 5

    await shop.move(picked, "picking")  # still on the shelves while staff walk to them
    assert (await shop.stock())["reserved"] == 5
    await shop.move(cancelled, "cancelled")
    assert (await shop.stock())["reserved"] == 3

    # staged: the units left the shelves, RFID counts 3 fewer, nothing is counted twice
    await shop.move(picked, "staged")
    await shop.shelves(GTIN=10 + SAFETY - 3)
    row = await shop.stock()
    assert (row["on_hand"], row["reserved"], row["available"]) == (8, 0, 7)

    # a staged order cancelled later gives nothing back twice
    await shop.move(picked, "cancelled")
    assert (await shop.stock())["reserved"] == 0


async def test_a_store_without_rfid_stock_refuses_orders_by_default(shop: Shop) -> None:
    response = await shop.order((GTIN, 1))
    assert response.status_code == 409
    assert "on hand 0" in response.json()["detail"]
