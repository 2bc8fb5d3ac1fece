"""Small synchronous paho helpers for tests that talk to a real broker."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


class Collector:
    """A paho client that subscribes and queues every message it receives."""

    def __init__(
        self, host: str, port: int, topics: Iterable[str], *, client_id: str | None = None
    ) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"collector-{uuid.uuid4().hex[:8]}"
        )
        topic_list = [(t, 1) for t in topics]

        def on_connect(client: mqtt.Client, *_: object) -> None:
            client.subscribe(topic_list)

        def on_subscribe(*_: object) -> None:
            self._subscribed.set()

        self.client.on_connect = on_connect
        self.client.on_subscribe = on_subscribe
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscription not acknowledged within 10 s")

    def take(self, count: int, timeout: float = 10.0) -> list[mqtt.MQTTMessage]:
        deadline = time.monotonic() + timeout
        out: list[mqtt.MQTTMessage] = []
        while len(out) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"got {len(out)} of {count} messages in {timeout}s")
            try:
                out.append(self.messages.get(timeout=remaining))
            except queue.Empty:
                continue
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def publisher(host: str, port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.connect(host, port)
    client.loop_start()
    return client
