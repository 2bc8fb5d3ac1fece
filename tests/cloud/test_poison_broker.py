"""A poison message in the middle of a stream, through a real Mosquitto and the consumer,
into a real PostgreSQL: dead-lettered, acked, and the stream behind it flows on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sqlalchemy import select

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from cloud.state import schema
from protocols.codec import encode, topic_for
from tests.cloud.conftest import PostgresServer
from tests.cloud.streams import NODE, RFID_STREAM, STORE, birth, gtin, rfid
from tests.cloud.test_consumer import _publish, _wait
from tests.servers import MosquittoBroker

OTHER_NODE = "pi-back"


def _poison_birth() -> tuple[str, bytes]:
    """Valid to the codec; PostgreSQL text cannot hold the NUL in its version."""
    message = birth(1, node=OTHER_NODE)
    data = json.loads(encode(message))
    data["version"] = "0.1\x00"
    return topic_for(message), json.dumps(data).encode()


def _out_of_range(seq: int) -> tuple[str, bytes]:
    """A seq past BIGINT: once a storage 'outage' that stopped every stream."""
    message = rfid(seq, {("shelf-1", gtin(0)): seq})
    data = json.loads(encode(message))
    data["seq"] = 2**63
    return topic_for(message), json.dumps(data).encode()


async def test_a_poison_message_does_not_stop_the_stream_on_postgresql(
    mosquitto_broker: MosquittoBroker, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database()
    settings = CloudSettings.model_validate(
        {
            "mqtt": {"host": "127.0.0.1", "port": mosquitto_broker.port},
            "ingest": {
                "client_id": f"poison-{tmp_path.name}"[:60],
                "spool_dir": str(tmp_path / "spool"),
                "batch_max": 50,
            },
            "database_url": url,
            "stores": [{"id": STORE, "nodes": [NODE, OTHER_NODE]}],
        }
    )
    total = 300
    stream = [rfid(seq, {("shelf-1", gtin(0)): seq}) for seq in range(1, total + 1)]
    items = [(topic_for(m), encode(m)) for m in stream]
    items.insert(100, _poison_birth())
    items.insert(200, _out_of_range(200))
    runtime = CloudRuntime(settings)
    consumer = runtime.consumer
    await runtime.start(serve_api=False)
    try:
        await asyncio.to_thread(consumer.connected.wait, 10)
        await asyncio.to_thread(_publish, mosquitto_broker.port, items)
        await _wait(lambda: consumer.acked_total >= len(items), 30, "every message acked")
        async with runtime.applier.engine.connect() as connection:
            dead = (
                await connection.execute(
                    select(schema.dead_letters.c.reason, schema.dead_letters.c.detail)
                )
            ).all()
            hw = (
                await connection.execute(
                    select(schema.stream_positions.c.hw).where(
                        schema.stream_positions.c.stream == RFID_STREAM
                    )
                )
            ).scalar_one()
            inventory = (await connection.execute(select(schema.inventory.c["count"]))).scalar_one()
    finally:
        await runtime.stop()
    assert sorted(reason for reason, _detail in dead) == ["data_error", "invalid"]
    assert any("seq" in detail for reason, detail in dead if reason == "invalid")
    assert hw == total  # nothing behind the poison was held back
    assert inventory == total
    assert consumer.acked_total == len(items)  # each exactly once: none retried
    assert runtime.metrics.batch_failures.labels("database")._value.get() == 0
