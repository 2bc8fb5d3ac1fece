"""EPCIS end to end through the real ingest path: edge-shaped messages over a real
Mosquitto → the cloud runtime (ingest, SQLite, EPCIS domain) → `GET /epcis/events` over
HTTP, per EPC, store and time range, page by page, each page schema-valid."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloud.config import CloudSettings
from cloud.epcis.cbv import epcis_time
from cloud.runtime import CloudRuntime
from protocols.codec import encode, topic_for
from protocols.messages import Message
from tests.cloud.cloudproc import OPS_KEY, cloud_config
from tests.cloud.streams import NODE, STORE, birth
from tests.epcis.schema import validate
from tests.epcis.stores import DOOR_SGLN, OPTIONS, STORE_SGLN, T0, item, report, sgtin_uri
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker

HEADERS = {"Authorization": f"Bearer {OPS_KEY}"}
SHELVED = 40


@pytest.fixture
async def cloud(mosquitto_broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudRuntime]:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={STORE: [NODE]})
    config["domains"] = {"epcis": OPTIONS}
    runtime = CloudRuntime(CloudSettings(**config))
    await runtime.start()
    yield runtime
    await runtime.stop()


def publish(broker: MosquittoBroker, messages: list[Message]) -> None:
    client = publisher(broker.host, broker.port)
    try:
        infos = [client.publish(topic_for(m), encode(m), qos=1) for m in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


async def pages(http: httpx.AsyncClient, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a query, following the Link headers; each page validated."""
    found = []
    response = await http.get("/epcis/events", params=params, headers=HEADERS)
    while True:
        assert response.status_code == 200, response.text
        document = response.json()
        validate(document)
        found.append(document["epcisBody"]["queryResults"]["resultsBody"]["eventList"])
        link = response.headers.get("link")
        if link is None:
            return found
        url = re.fullmatch(r'<(.+)>; rel="next"', link)
        assert url is not None, link
        response = await http.get(url.group(1), headers=HEADERS)


@pytest.mark.timeout(60)
async def test_events_ingested_over_mqtt_are_served_per_epc_store_and_time(
    cloud: CloudRuntime, mosquitto_broker: MosquittoBroker
) -> None:
    shelved = [
        item("arrived", n, T0 + timedelta(seconds=n), shelf="shelf-1") for n in range(SHELVED)
    ]
    later = T0 + timedelta(seconds=SHELVED + 10)
    messages: list[Message] = [
        birth(1, rfid_seq=0),
        report(1, *shelved[:20]),
        report(2, *shelved[20:]),
        report(3, item("arrived", 7, later, shelf="till-1")),
        report(4, item("arrived", 7, later + timedelta(seconds=5), shelf="door-1")),
        report(5, item("arrived", 8, later + timedelta(seconds=6), shelf="door-1")),
    ]
    await asyncio.to_thread(publish, mosquitto_broker, messages)
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            everything = [e for page in await pages(http, perPage=100) for e in page]
            if len(everything) == SHELVED + 3 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert len(everything) == SHELVED + 3, "every event ingested over MQTT is served"

        in_store = await pages(http, EQ_bizLocation=STORE_SGLN, perPage=7)
        assert [len(p) for p in in_store] == [7] * 5 + [6]  # 40 arrivals and the sale
        assert [e["eventID"] for p in in_store for e in p] == [
            e["eventID"] for e in everything if e.get("bizLocation", {}).get("id") == STORE_SGLN
        ]

        seven = [e for page in await pages(http, MATCH_epc=sgtin_uri(7)) for e in page]
        assert [(e["bizStep"], e["disposition"]) for e in seven] == [
            ("stocking", "sellable_accessible"),
            ("retail_selling", "retail_sold"),
            ("entering_exiting", "retail_sold"),
        ]
        exits = [e for page in await pages(http, EQ_readPoint=DOOR_SGLN) for e in page]
        assert [(e["epcList"], e["bizStep"]) for e in exits] == [
            ([sgtin_uri(7)], "entering_exiting"),
            ([sgtin_uri(8)], "departing"),
        ]

        start, end = T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)
        window = await pages(http, GE_eventTime=epcis_time(start), LT_eventTime=epcis_time(end))
        assert [e["epcList"][0] for e in window[0]] == [sgtin_uri(n) for n in range(10, 20)]
    finally:
        await http.aclose()
