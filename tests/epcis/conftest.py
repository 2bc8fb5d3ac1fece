"""The ingest batch applier with the EPCIS domain on a real database (SQLite and
PostgreSQL), and the API on that same state through ASGI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from cloud.api.app import create_app
from cloud.bus import LiveBus
from cloud.config import CloudSettings, hash_key
from cloud.context import CloudContext
from cloud.epcis import EpcisDomain, create_domain
from tests.cloud.conftest import database_url, postgres_server  # noqa: F401  (fixtures)
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE
from tests.epcis.stores import OPTIONS

OTHER_STORE = "store-007"
OPS_KEY, STAFF_KEY, SHOPPER_KEY = "ops-key-1", "staff-key-1", "shopper-key-1"
KEYS = [
    {"name": "ops", "role": "ops", "sha256": hash_key(OPS_KEY)},
    {"name": "staff", "role": "staff", "stores": [OTHER_STORE], "sha256": hash_key(STAFF_KEY)},
    {"name": "shop", "role": "shopper_app", "sha256": hash_key(SHOPPER_KEY)},
]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Rig:
    harness: StateHarness
    domain: EpcisDomain
    http: httpx.AsyncClient


@pytest.fixture
async def rig(database_url: str) -> AsyncIterator[Rig]:  # noqa: F811
    stores = (STORE, OTHER_STORE)
    settings = CloudSettings(
        api={"keys": KEYS},
        stores=[{"id": store, "nodes": [NODE]} for store in stores],
        domains={"epcis": {**OPTIONS, "default_page_size": 30, "max_page_size": 50}},
    )
    domain = create_domain(settings, dict(settings.domains["epcis"]))
    harness = StateHarness(database_url, {store: [NODE] for store in stores}, domains=[domain])
    await harness.start()
    context = CloudContext(
        settings, harness.engine, harness.registry, LiveBus(100), harness.metrics, lambda: True
    )
    app = create_app(context, routers=[domain.router()])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://cloud") as http:
        rig = Rig(harness, domain, http)
        yield rig
    await rig.harness.close()
