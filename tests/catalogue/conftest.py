"""A real cloud (in-process, real Mosquitto, temp SQLite) with the catalogue configured, and
the session's PostgreSQL for the queries that must work on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from tests.cloud.cloudproc import cloud_config
from tests.cloud.conftest import postgres_server  # noqa: F401  (the session's PostgreSQL)
from tests.dashboard.edge import NODE, OTHER_STORE, STORE, EdgePublisher
from tests.servers import MosquittoBroker

CATALOGUE_OPTIONS = {
    "default_currency": "EUR",
    "shelf_areas": {STORE: {"backroom-1": "backroom", "aisle3-shelf2": "floor"}},
}


@pytest.fixture
async def cloud(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudRuntime]:
    config = cloud_config(
        mosquitto_broker.port,
        tmp_path,
        stores={STORE: [NODE], OTHER_STORE: ["pi-1"]},
        batch_wait_ms=5,
    )
    config["stores"][1]["name"] = "Paris Rivoli"
    config["domains"] = {"catalogue": CATALOGUE_OPTIONS}
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def http(cloud: CloudRuntime) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=10) as c:
        yield c


@pytest.fixture
def edge(mosquitto_broker: MosquittoBroker) -> Iterator[EdgePublisher]:
    client = EdgePublisher(mosquitto_broker)
    yield client
    client.close()
