"""Fixtures for the inventory domain: the ingest batch applier with the domain on a real
database (SQLite and PostgreSQL), and the API on that same state through ASGI."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cloud.api.app import create_app
from cloud.bus import Change, LiveBus, Subscription
from cloud.config import CloudSettings, hash_key
from cloud.context import CloudContext
from cloud.inventory import InventoryDomain, create_domain
from tests.cloud.conftest import database_url, postgres_server  # noqa: F401  (fixtures)
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE
from tests.inventory.shop import shop  # noqa: F401  (fixture)

OTHER_STORE = "store-007"
OPS_KEY, STAFF_KEY, SHOPPER_KEY = "ops-key-1", "staff-key-1", "shopper-key-1"
KEYS = [
    {"name": "ops", "role": "ops", "sha256": hash_key(OPS_KEY)},
    {"name": "staff", "role": "staff", "stores": [STORE], "sha256": hash_key(STAFF_KEY)},
    {"name": "shop", "role": "shopper_app", "sha256": hash_key(SHOPPER_KEY)},
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Rig:
    harness: StateHarness
    domain: InventoryDomain
    http: httpx.AsyncClient
    live: Subscription

    async def published(self) -> list[Change]:
        """Live changes the API published so far (an ingest batch's are in its outcome)."""
        out = []
        while True:
            try:
                out.append(await asyncio.wait_for(self.live.get(), 0.05))
            except TimeoutError:
                return out


async def make_rig(
    url: str,
    options: dict[str, Any] | None = None,
    stores: Sequence[str] = (STORE, OTHER_STORE),
) -> AsyncIterator[Rig]:
    settings = CloudSettings(
        api={"keys": KEYS},
        stores=[{"id": store, "nodes": [NODE]} for store in stores],
        domains={"inventory": options or {}},
    )
    domain = create_domain(settings, dict(settings.domains["inventory"]))
    harness = StateHarness(url, {store: [NODE] for store in stores}, domains=[domain])
    await harness.start()
    bus = LiveBus(1000)
    context = CloudContext(
        settings, harness.engine, harness.registry, bus, harness.metrics, lambda: True
    )
    app = create_app(context, routers=[domain.router()])
    live = bus.subscribe()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as http:
        yield Rig(harness, domain, http, live)
    await harness.close()


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:  # noqa: F811
    async for made in make_rig(database_url, {"hysteresis": 1}):
        yield made
