"""Store operations over a real Mosquitto: RFID messages as the edge publishes them reach the
cloud runtime (ingest, SQLite, inventory domain, API), which opens and closes a replenishment
task from the counts and raises an exit alert for the unsold item only."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from protocols.codec import encode, topic_for
from protocols.messages import ItemEvent, ItemEventKind, Message, RfidEvents
from tests.cloud.cloudproc import OPS_KEY, cloud_config
from tests.cloud.streams import NODE, READER, STORE, rfid
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker

GTIN = "80614141000001"
SOLD, UNSOLD = "3074257BF7194E4000000001", "3074257BF7194E4000000002"
HEADERS = {"Authorization": f"Bearer {OPS_KEY}"}


async def eventually(check: Callable[[], Awaitable[Any]], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.1)


@pytest.mark.timeout(60)
async def test_tasks_and_exit_alerts_over_a_real_broker(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {
        "inventory": {
            "zones": {"shelves": {"back": "backroom", "door": "exit"}},
            "floor_minimums": [{"gtin": GTIN, "minimum": 3, "shelf": "floor-1"}],
        }
    }
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    edge = publisher("127.0.0.1", mosquitto_broker.port)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{runtime.api_port}/api/v1", timeout=10)

    def send(message: Message) -> None:
        edge.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)

    async def tasks(status: str) -> list[dict[str, Any]]:
        response = await http.get(f"/stores/{STORE}/tasks?status={status}", headers=HEADERS)
        assert response.status_code == 200, response.text
        found: list[dict[str, Any]] = response.json()
        return found

    async def exit_alerts() -> list[dict[str, Any]]:
        response = await http.get("/alerts?type=exit_unsold", headers=HEADERS)
        found: list[dict[str, Any]] = response.json()["items"]
        return found

    try:
        send(rfid(1, {("floor-1", GTIN): 3, ("back-1", GTIN): 4}))
        send(rfid(2, {("floor-1", GTIN): 1}))  # two below the minimum
        [task] = await eventually(lambda: tasks("open"), 15, "task opened")
        assert (task["quantity"], task["to_shelf"]) == (2, "floor-1")
        send(rfid(3, {("floor-1", GTIN): 3, ("back-1", GTIN): 2}))  # moved: at the minimum
        [done] = await eventually(lambda: tasks("done"), 15, "task closed by RFID")
        assert (done["id"], done["closed_by"]) == (task["id"], "rfid")

        sale = {"sale_id": "receipt-1", "items": [{"epc": SOLD, "gtin": GTIN, "price": "5.00"}]}
        response = await http.post(f"/stores/{STORE}/sales", headers=HEADERS, json=sale)
        assert response.json()["marked"] == 1, response.text
        now = datetime.now(UTC)
        send(
            RfidEvents(
                store=STORE,
                node=NODE,
                seq=4,
                reader=READER,
                event_time=now,
                items=[
                    ItemEvent(kind=ItemEventKind.MOVED, epc=epc, gtin=GTIN, shelf="door-1", at=now)
                    for epc in (SOLD, UNSOLD)
                ],
            )
        )
        [alert] = await eventually(exit_alerts, 15, "exit alert raised")
        assert (alert["details"]["epc"], alert["details"]["value"]) == (UNSOLD, 5.0)
    finally:
        await http.aclose()
        edge.disconnect()
        edge.loop_stop()
        await runtime.stop()
