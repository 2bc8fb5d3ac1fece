"""A simulated Zebra IoT Connector: publishes tag data events to a real MQTT broker.

Like an FX9600 whose IoT Connector has an MQTT data endpoint: every read cycle (`cycle_s`)
while connected, each read of the `World` becomes a tag data event
`{"data": {"eventNum", "format": "epc", "idHex", "antenna", "peakRssi", "reads", "channel",
...}, "timestamp", "type": "SIMPLE"}` on `data_topic` (`batch_size` > 1 publishes JSON
arrays of events, like the connector's batching). A heartbeat management event goes to
`management_topic` every `heartbeat_s`. The world keeps the ground truth. Fault injection:
`publish_raw()` (garbage, partial events); stopping the broker is the test's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import UTC, datetime

from protocols.mqtt import MqttSettings, connect, new_client
from simulators.llrp.world import TagRead, World

log = logging.getLogger(__name__)


def zebra_time(t: float) -> str:
    """Zebra's timestamp style: local ISO time with milliseconds and a +hhmm offset."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def tag_data_event(read: TagRead, event_num: int, t: float) -> dict[str, object]:
    return {
        "data": {
            "eventNum": event_num,
            "format": "epc",
            "idHex": read.epc.lower(),
            "antenna": read.antenna,
            "peakRssi": read.rssi,
            "reads": read.count,
            "channel": 902.75 + 0.5 * read.channel,
            "phase": 0.0,
        },
        "timestamp": zebra_time(t),
        "type": "SIMPLE",
    }


class SimulatedZebraConnector:
    def __init__(
        self,
        world: World,
        settings: MqttSettings,
        *,
        data_topic: str,
        management_topic: str | None = None,
        cycle_s: float = 1.0,
        heartbeat_s: float = 1.0,
        batch_size: int = 1,
        qos: int = 1,
        client_id: str = "zebra-sim",
    ) -> None:
        self.world = world
        self.settings = settings
        self.data_topic = data_topic
        self.management_topic = management_topic
        self.cycle_s = cycle_s
        self.heartbeat_s = heartbeat_s
        self.batch_size = batch_size
        self.qos = qos
        self.events_sent = 0
        self.cycles_skipped = 0  # cycles while the broker was away (reads lost, as on a reader)
        self.publishing = True  # False: the reader stays connected but silent (a hung radio)
        self._event_num = 0
        self._started = time.monotonic()
        self._client = new_client(settings, client_id, clean_start=True)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        connect(self._client, self.settings, clean_start=True, asynchronous=True)
        self._client.loop_start()
        self._tasks = [asyncio.create_task(self._inventory_loop(), name="zebra-sim-inventory")]
        if self.management_topic:
            self._tasks.append(
                asyncio.create_task(self._heartbeat_loop(), name="zebra-sim-heartbeat")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._client.disconnect()
        await asyncio.to_thread(self._client.loop_stop)

    async def __aenter__(self) -> SimulatedZebraConnector:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def publish_raw(self, payload: bytes, topic: str | None = None) -> None:
        self._client.publish(topic or self.data_topic, payload, qos=self.qos)

    async def _inventory_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cycle_s)
            if not self.publishing:
                continue
            if not self._client.is_connected():
                self.cycles_skipped += 1
                continue
            now = time.time()
            events = []
            for read in self.world.cycle(now, self.cycle_s):
                self._event_num += 1
                events.append(tag_data_event(read, self._event_num, now))
            for i in range(0, len(events), self.batch_size):
                chunk = events[i : i + self.batch_size]
                body = chunk[0] if self.batch_size == 1 else chunk
                self._client.publish(
                    self.data_topic, json.dumps(body, separators=(",", ":")), qos=self.qos
                )
                self.events_sent += len(chunk)

    async def _heartbeat_loop(self) -> None:
        assert self.management_topic is not None
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if not self.publishing or not self._client.is_connected():
                continue
            event = {
                "type": "heartbeat",
                "timestamp": zebra_time(time.time()),
                "data": {"uptime": int(time.monotonic() - self._started)},
            }
            self._client.publish(self.management_topic, json.dumps(event), qos=0)
