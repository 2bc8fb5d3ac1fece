"""The ingest consumer on a real broker with a recording stand-in for the state store:
for tests of the MQTT side alone (what arrives, in which order, what gets acked)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.ingest.apply import BatchOutcome, Incoming
from cloud.ingest.consumer import Consumer
from cloud.metrics import CloudMetrics

Received = tuple[str, bytes, int]  # topic, payload, qos


class RecordingApplier:
    """Stands in for the state store: records what the consumer hands over, in order."""

    def __init__(self) -> None:
        self.received: list[Received] = []

    async def apply(self, batch: Sequence[Incoming]) -> BatchOutcome:
        self.received += [(item.topic, item.payload, item.qos) for item in batch]
        return BatchOutcome(applied=len(batch))


@contextlib.asynccontextmanager
async def running_consumer(
    mqtt: dict[str, Any], client_id: str, *, queue_size: int = 100
) -> AsyncIterator[tuple[RecordingApplier, Consumer]]:
    """A connected consumer (`mqtt`: the `mqtt` section of the cloud config)."""
    settings = CloudSettings.model_validate(
        {
            "mqtt": mqtt,
            "ingest": {"client_id": client_id, "batch_wait_ms": 0, "queue_size": queue_size},
            "database_url": "sqlite+aiosqlite:///:memory:",
            "stores": [],
        }
    )
    applier = RecordingApplier()
    consumer = Consumer(settings, applier, CloudMetrics(), LiveBus(16))  # type: ignore[arg-type]
    consumer.start()
    worker = asyncio.create_task(consumer.run())
    try:
        assert await asyncio.to_thread(consumer.connected.wait, 10), "consumer not connected"
        yield applier, consumer
    finally:
        consumer.stop()
        await worker
        await consumer.close()


async def until_acked(consumer: Consumer, acked: int, seconds: float) -> None:
    """Wait until `acked` messages are acked or `seconds` pass (the caller checks which)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while consumer.acked_total < acked:  # noqa: ASYNC110 -- polling is the test
                await asyncio.sleep(0.02)
