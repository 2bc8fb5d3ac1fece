"""The uplink against a real Mosquitto: what paho may resend by itself after a reconnect."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.uplink import Uplink, Will
from protocols.mqtt import MqttSettings
from tests.servers import MosquittoBroker


class _Subscriber:
    """A persistent session, so nothing published while the broker restarts is missed."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.topics: list[str] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"sub-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe("t/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.topics.append(m.topic)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def _until(condition: Callable[[], object]) -> None:
    for _ in range(300):  # 15 s
        if condition():
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("condition not met within 15 s")


async def test_outbox_messages_are_not_resent_by_paho_after_a_reconnect(
    persistent_mosquitto: MosquittoBroker,
) -> None:
    broker = persistent_mosquitto
    subscriber = _Subscriber(broker)
    connects: list[bool] = []
    settings = MqttSettings(port=broker.port, reconnect_min_s=1, reconnect_max_s=1)
    uplink = Uplink(
        settings,
        f"uplink-{uuid.uuid4().hex[:8]}",
        inflight=8,
        will=lambda: Will("t/will", b"gone"),
        on_connected=connects.append,
        on_disconnected=lambda: None,
        on_message=lambda _t, _p: None,
    )
    uplink.start()
    try:
        await _until(lambda: connects)
        await asyncio.to_thread(broker.stop)
        await _until(lambda: not uplink.connected.is_set())
        # Both wait in paho's queue while the broker is away.
        outbox = uplink.publish("t/outbox", b"1", resend=False)
        lifecycle = uplink.publish("t/lifecycle", b"2")
        await asyncio.to_thread(broker.start)
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(outbox, 15)  # forgotten before the CONNECT: ours to resend
        await asyncio.wait_for(lifecycle, 15)  # paho still resends its own
        await _until(lambda: "t/lifecycle" in subscriber.topics)
        await asyncio.sleep(0.5)
        assert "t/outbox" not in subscriber.topics
        assert len(connects) == 2
    finally:
        await uplink.stop()
        subscriber.close()
