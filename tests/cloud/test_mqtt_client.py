"""The ingest client's receive path (cloud/ingest/mqtt_client.py) against stock paho, on a
real Mosquitto: the same messages arrive, the fast path really runs, and its acks are right."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.ingest.mqtt_client import READ_AHEAD_BYTES, IngestClient
from protocols.topics import TOPIC_PREFIX, node_filter
from tests.cloud.recording import Received, running_consumer, until_acked
from tests.servers import MosquittoBroker

BASE = f"{TOPIC_PREFIX}/store-1/node-1"


def _mqtt(port: int, protocol: str) -> dict[str, object]:
    return {"host": "127.0.0.1", "port": port, "protocol": protocol}


def _protocol(name: str) -> MQTTProtocolVersion:
    return MQTTProtocolVersion.MQTTv5 if name == "5" else MQTTProtocolVersion.MQTTv311


class StockSubscriber:
    """Stock paho, as the reference for what a subscriber receives."""

    def __init__(self, port: int, protocol: str) -> None:
        self.received: list[Received] = []
        subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"stock-{uuid.uuid4().hex[:8]}",
            protocol=_protocol(protocol),
        )
        self.client.on_connect = lambda c, *_: c.subscribe(node_filter(), qos=1)
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.append(
            (m.topic, bytes(m.payload), m.qos)
        )
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "stock subscriber not subscribed"

    def wait_for(self, count: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _traffic(protocol: str) -> list[tuple[str, bytes, int, Properties | None]]:
    """A burst of small messages, and the cases at the edges of the fast path."""
    out: list[tuple[str, bytes, int, Properties | None]] = [
        (f"{BASE}/rfid/reader-{i % 3}", f"message {i} ".encode() * (1 + i % 20), 1, None)
        for i in range(600)
    ]
    out += [
        (f"{BASE}/health", b"", 1, None),  # empty payload
        (f"{BASE}/rfid/big", bytes(range(256)) * (3 * READ_AHEAD_BYTES // 256), 1, None),
        (f"{BASE}/ble/scanner-1", b"at most once", 0, None),
        (f"{BASE}/locker/bank-\u00e9", b"a UTF-8 topic level", 1, None),
    ]
    if protocol == "5":
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = ("trace", "abc")
        properties.ContentType = "application/json"
        out += [(f"{BASE}/rfid/reader-1", b"with properties", 1, properties)]
    out += [(f"{BASE}/status", b"the last one, behind all the others", 1, None)]
    return out


Traffic = list[tuple[str, bytes, int, Properties | None]]


def _publish(port: int, protocol: str, traffic: Traffic) -> None:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"pub-{uuid.uuid4().hex[:8]}",
        protocol=_protocol(protocol),
    )
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [
            client.publish(topic, payload, qos=qos, properties=properties)
            for topic, payload, qos, properties in traffic
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        client.disconnect()
        client.loop_stop()


def _by_topic(received: list[Received]) -> dict[str, list[tuple[bytes, int]]]:
    # The broker keeps each publisher's order per QoS level, not across levels (QoS 0 is
    # not held back behind QoS 1 messages in flight), so order is compared per topic.
    out: dict[str, list[tuple[bytes, int]]] = {}
    for topic, payload, qos in received:
        out.setdefault(topic, []).append((payload, qos))
    return out


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_the_ingest_client_receives_what_stock_paho_receives(
    mosquitto_broker: MosquittoBroker, protocol: str
) -> None:
    port = mosquitto_broker.port
    client_id = f"ingest-{uuid.uuid4().hex[:8]}"
    traffic = _traffic(protocol)
    stock = StockSubscriber(port, protocol)
    try:
        async with running_consumer(_mqtt(port, protocol), client_id) as (applier, consumer):
            await asyncio.to_thread(_publish, port, protocol, traffic)
            # The tail of the burst must not stay behind in the read-ahead.
            await until_acked(consumer, len(traffic), 30)
        await asyncio.to_thread(stock.wait_for, len(traffic), 30)
    finally:
        stock.close()

    assert len(stock.received) == len(traffic)
    assert len(applier.received) == len(traffic)
    assert _by_topic(applier.received) == _by_topic(stock.received)
    client = consumer.client
    assert isinstance(client, IngestClient)
    assert client.fast_path, "the fast path is off for this paho: see TESTED_PAHO"
    with_properties = sum(1 for *_, properties in traffic if properties is not None)
    assert client.fast_deliveries == len(traffic) - with_properties

    # Every message was acknowledged with its own packet id: the session holds nothing.
    async with running_consumer(_mqtt(port, protocol), client_id) as (again, consumer):
        await until_acked(consumer, 1, 1.5)
    assert again.received == []


async def test_a_backlog_is_read_to_its_last_message(mosquitto_broker: MosquittoBroker) -> None:
    # A reconnect after an outage: the broker sends the queued session as fast as the
    # Receive Maximum allows, so one read-ahead holds more messages than one wake-up reads.
    port = mosquitto_broker.port
    client_id = f"backlog-{uuid.uuid4().hex[:8]}"
    async with running_consumer(_mqtt(port, "5"), client_id, queue_size=5000):
        pass  # the persistent session now exists
    backlog: Traffic = [
        (f"{BASE}/rfid/reader-1", f"{i:06d}".encode(), 1, None) for i in range(2_000)
    ]
    await asyncio.to_thread(_publish, port, "5", backlog)
    async with running_consumer(_mqtt(port, "5"), client_id, queue_size=5000) as (
        applier,
        consumer,
    ):
        await until_acked(consumer, len(backlog), 20)
    assert [payload for _, payload, _ in applier.received] == [p for _, p, _, _ in backlog]


def test_an_untested_paho_release_gets_stock_paho(monkeypatch: pytest.MonkeyPatch) -> None:
    from paho import mqtt as paho_package

    monkeypatch.setattr(paho_package, "__version__", "3.0.0")
    client = IngestClient(CallbackAPIVersion.VERSION2, client_id="untested")
    assert not client.fast_path


def test_paho_s_own_loops_turn_the_fast_path_off(mosquitto_broker: MosquittoBroker) -> None:
    client = IngestClient(CallbackAPIVersion.VERSION2, client_id=f"own-loop-{uuid.uuid4().hex[:6]}")
    assert client.fast_path
    client.connect("127.0.0.1", mosquitto_broker.port)
    client.loop_start()
    try:
        assert not client.fast_path  # its select() would not see bytes read ahead
    finally:
        client.disconnect()
        client.loop_stop()
