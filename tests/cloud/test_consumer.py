"""The ingest consumer on a real Mosquitto: the un-acked bound, and a broker restart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from cloud.config import CloudSettings
from cloud.ingest.apply import BatchOutcome, Incoming
from cloud.runtime import CloudRuntime
from protocols.codec import encode, topic_for
from tests.cloud.streams import NODE, STORE, gtin, rfid
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker


def _settings(port: int, tmp_path: Path, protocol: str, **ingest: object) -> CloudSettings:
    return CloudSettings.model_validate(
        {
            "mqtt": {"host": "127.0.0.1", "port": port, "protocol": protocol},
            "ingest": {
                "client_id": f"consumer-{tmp_path.name}"[:60],
                "spool_dir": str(tmp_path / "spool"),
                **ingest,
            },
            "database_url": f"sqlite+aiosqlite:///{tmp_path}/state.db",
            "stores": [{"id": STORE, "nodes": [NODE]}],
        }
    )


def _messages(first: int, last: int) -> list[tuple[str, bytes]]:
    out = []
    for seq in range(first, last + 1):
        message = rfid(seq, {("shelf-1", gtin(0)): seq})
        out.append((topic_for(message), encode(message)))
    return out


def _publish(port: int, items: list[tuple[str, bytes]]) -> None:
    client = publisher("127.0.0.1", port)
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


async def _wait(condition: Callable[[], bool], seconds: float, what: str) -> None:
    try:
        async with asyncio.timeout(seconds):
            while not condition():  # noqa: ASYNC110 -- polling the consumer is the test
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


# MQTT 3.1.1 has no Receive Maximum, so only the consumer's own pause bounds what it holds.
@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_slow_storage_keeps_unacked_messages_within_the_bound(
    mosquitto_broker: MosquittoBroker, tmp_path: Path, protocol: str
) -> None:
    bound = 20
    settings = _settings(
        mosquitto_broker.port, tmp_path, protocol, queue_size=bound, batch_max=5, batch_wait_ms=0
    )
    runtime = CloudRuntime(settings)
    consumer = runtime.consumer
    apply = runtime.applier.apply

    async def slow_apply(batch: Sequence[Incoming]) -> BatchOutcome:
        await asyncio.sleep(0.03)  # storage that keeps up at ~150 msg/s, not at the flood
        return await apply(batch)

    runtime.applier.apply = slow_apply  # type: ignore[method-assign]
    await runtime.start(serve_api=False)
    held: list[int] = []
    paused_seen = False
    try:
        await asyncio.to_thread(consumer.connected.wait, 10)
        total = 200
        messages = _messages(1, total)
        publishing = asyncio.create_task(
            asyncio.to_thread(_publish, mosquitto_broker.port, messages)
        )
        deadline = time.monotonic() + 60
        while consumer.acked_total < total:
            assert time.monotonic() < deadline, f"acked {consumer.acked_total} of {total}"
            held.append(len(consumer._pending) + consumer._in_batch)
            paused_seen = paused_seen or consumer._paused
            await asyncio.sleep(0.002)
        await publishing
    finally:
        await runtime.stop()
    assert await _inventory(settings) == {("shelf-1", gtin(0)): total}
    assert max(held) <= bound, f"held {max(held)} un-acked messages, bound {bound}"
    assert max(held) >= bound // 2, "the flood never reached the bound: nothing was tested"
    if protocol == "3.1.1":
        assert paused_seen, "the consumer never stopped reading"


async def test_ingest_reconnects_after_a_broker_restart_and_loses_nothing(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    settings = _settings(mosquitto_broker.port, tmp_path, "5", batch_wait_ms=0)
    settings.mqtt.reconnect_min_s = 0.2
    runtime = CloudRuntime(settings)
    consumer = runtime.consumer
    await runtime.start(serve_api=False)
    try:
        await asyncio.to_thread(consumer.connected.wait, 10)
        await asyncio.to_thread(_publish, mosquitto_broker.port, _messages(1, 50))
        await _wait(lambda: consumer.acked_total >= 50, 20, "the first 50 messages")
        await asyncio.to_thread(mosquitto_broker.restart, 1.0)
        await _wait(lambda: not consumer.connected.is_set(), 10, "the loss to be noticed")
        await _wait(consumer.connected.is_set, 20, "the reconnect")
        await asyncio.to_thread(_publish, mosquitto_broker.port, _messages(51, 100))
        await _wait(lambda: consumer.acked_total >= 100, 20, "the next 50 messages")
    finally:
        await runtime.stop()
    # The applied stream is whole: the shelf count is the last message's.
    assert await _inventory(settings) == {("shelf-1", gtin(0)): 100}


async def _inventory(settings: CloudSettings) -> dict[tuple[str, str], int]:
    from sqlalchemy import select

    from cloud.state import schema
    from cloud.state.db import create_engine

    engine = create_engine(settings.database_url)
    try:
        async with engine.connect() as connection:
            t = schema.inventory
            rows = await connection.execute(select(t.c.shelf, t.c.gtin, t.c.count))
            return {(shelf, g): count for shelf, g, count in rows}
    finally:
        await engine.dispose()
