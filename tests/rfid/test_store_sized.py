"""A store-sized shelf population, end to end: 50,000 tagged items (each its own shelf/GTIN
row, the worst case for message size) read into the real presence engine of a shelf-reader
driver in the real edge runtime → real Mosquitto → the cloud runtime (ingest, SQLite).

The 50,000 arrivals come out of one report (~7 MB of item events, ~3 MB of count deltas)
and the births that follow are ~2.7 MB of shelves: all of it must go in messages under the
payload limit, and the cloud must end up with every row through the report, through a
birth answering a resync, and through the birth after a reconnect.

Only the reader's air interface is left out: the test feeds reads to the driver's engine
as the LLRP driver does (`engine.observe`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import delete, func, select

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from cloud.state import schema
from edge.config import load_edge_settings
from edge.drivers.base import DriverContext
from edge.rfid.shelf_reader import ShelfReaderDriver
from edge.runtime import EdgeRuntime
from protocols.codec import MAX_PAYLOAD_BYTES, encode, topic_for
from protocols.messages import Birth, Command, new_message_id, utc_now
from protocols.topics import Channel, NodeTopic
from simulators.llrp.world import sgtin96
from tests.cloud.cloudproc import cloud_config
from tests.edge.helpers import NODE, STORE, Watcher, edge_config, sim_device
from tests.servers import MosquittoBroker, mosquitto

ITEMS = 50_000
SHELVES = 10
EPOCH_S = 0.25


class FedReader(ShelfReaderDriver):
    """A shelf reader whose reads the test feeds; everything downstream is the real one."""

    driver_name = "fed"

    def __init__(self) -> None:
        super().__init__(
            "reader-1",
            {antenna: f"shelf-{antenna}" for antenna in range(1, SHELVES + 1)},
            {"epoch_s": EPOCH_S},
            report_interval_s=1.0,
            snapshot_interval_s=3600.0,
        )

    async def _connection_loop(self, ctx: DriverContext) -> None:
        self._reader_up(ctx)
        await asyncio.Event().wait()


def epcs() -> list[tuple[str, int]]:
    return [(sgtin96(1 + i, i), 1 + i % SHELVES) for i in range(ITEMS)]


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """Keeps sessions across a restart, as a deployed broker does: what the edge publishes
    while the cloud is still reconnecting waits for it."""
    workdir = tmp_path / "mosquitto"
    workdir.mkdir()
    server = mosquitto(workdir, persistence=True)
    server.start()
    yield server
    server.kill()


@pytest.fixture
async def cloud(broker: MosquittoBroker, tmp_path: Path) -> AsyncIterator[CloudRuntime]:
    runtime = CloudRuntime(
        CloudSettings(**cloud_config(broker.port, tmp_path, stores={STORE: [NODE]}))
    )
    await runtime.start(serve_api=False)
    yield runtime
    await runtime.stop()


async def inventory_rows(cloud: CloudRuntime) -> tuple[int, int]:
    t = schema.inventory
    async with cloud.engine.connect() as connection:
        row = (
            await connection.execute(
                select(func.count(), func.coalesce(func.sum(t.c["count"]), 0)).where(
                    t.c.store_id == STORE
                )
            )
        ).one()
    return int(row[0]), int(row[1])


async def wipe_inventory(cloud: CloudRuntime) -> None:
    """Lose the cloud's rows, so that only a whole birth can bring them back."""
    async with cloud.engine.begin() as connection:
        await connection.execute(delete(schema.inventory))
    assert await inventory_rows(cloud) == (0, 0)


async def all_rows_within(cloud: CloudRuntime, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while (rows := await inventory_rows(cloud)) != (ITEMS, ITEMS):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: cloud has (rows, items) {rows}, not {ITEMS} each")
        await asyncio.sleep(0.25)


def split_births(watcher: Watcher, bd_seq_after: int) -> list[Birth]:
    births = [m for m in watcher.of_type("birth") if isinstance(m, Birth)]
    return [b for b in births if b.bd_seq > bd_seq_after and b.parts > 1]


def publish_resync(broker: MosquittoBroker) -> None:
    command = Command(
        store=STORE,
        node=NODE,
        seq=1,
        name="resync",
        correlation_id=new_message_id(),
        expires_at=utc_now() + timedelta(seconds=60),
    )
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{new_message_id()[:8]}")
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        client.publish(topic_for(command), encode(command), qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.timeout(90)
async def test_fifty_thousand_items_through_report_resync_and_reconnect(
    cloud: CloudRuntime, broker: MosquittoBroker, tmp_path: Path
) -> None:
    # the config names a sim reader for the device; the runtime gets the fed one instead
    settings = load_edge_settings(edge_config(tmp_path, broker.port, [sim_device()]))
    driver = FedReader()
    edge = EdgeRuntime(settings, {"reader-1": driver}, version="test", handle_signals=False)
    watcher = Watcher(
        broker.host,
        broker.port,
        topic=str(NodeTopic(STORE, NODE, Channel.BIRTH)),
    )
    edge_task = asyncio.create_task(edge.run())
    try:
        await asyncio.to_thread(watcher.wait_for, lambda m: isinstance(m, Birth), 20, "birth")

        # 1. every tag read in a few epochs: one report of 50,000 arrivals
        tags = epcs()
        for _ in range(4):
            now = time.time()
            for epc, antenna in tags:
                driver.engine.observe(epc, antenna, -50.0, now)
            await asyncio.sleep(EPOCH_S)
        # the reader then stops (departures frozen), so the population stays as it is
        driver.engine.set_reader_up(False, time.time())
        await all_rows_within(cloud, 40, "after the report")
        assert len(driver.engine.items()) == ITEMS
        assert driver.dropped_batches == 0
        assert edge.supervisors["reader-1"].restarts == 0  # no crash-loop on a big report
        reports = driver.metrics()["messages_out"]
        assert reports >= 10 * 1024 * 1024 / MAX_PAYLOAD_BYTES * 0.9  # ~10 MB in parts

        # 2. a resync answers with a birth in parts; the cloud puts every row back
        first_bd_seq = edge.bd_seq
        await wipe_inventory(cloud)
        await asyncio.to_thread(publish_resync, broker)
        await all_rows_within(cloud, 30, "after the resync birth")
        parts = split_births(watcher, first_bd_seq - 1)
        assert len({b.snapshot_id for b in parts}) == 1
        assert sorted(b.part for b in parts) == list(range(1, parts[0].parts + 1))
        assert sum(len(b.shelves) for b in parts) == ITEMS

        # 3. the broker restarts: the birth of the new connection rebuilds every row
        await wipe_inventory(cloud)
        broker.restart(down_for=0.5)
        await all_rows_within(cloud, 40, "after the reconnect birth")
        assert edge.bd_seq > first_bd_seq
    finally:
        edge.stop()
        watcher.close()
        await asyncio.wait_for(edge_task, 20)
