"""Running the real edge daemon as a subprocess and watching what it publishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from protocols.codec import decode
from protocols.messages import AnyMessage
from tests.conftest import REPO_ROOT

STORE, NODE = "store-7", "pi-1"


def edge_config(tmp_path: Path, port: int, devices: list[dict[str, Any]], **overrides: Any) -> Path:
    config: dict[str, Any] = {
        "store": STORE,
        "node": NODE,
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_min_s": 1, "reconnect_max_s": 2},
        "outbox": {"path": str(tmp_path / "outbox.db")},
        "health_interval_s": 1,
        "shutdown_flush_s": 5,
        "devices": devices,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sim_device(device: str = "reader-1", **options: Any) -> dict[str, Any]:
    return {"id": device, "kind": "rfid_reader", "driver": "sim-counter", "options": options}


class EdgeProcess:
    """`python -m storegate edge -c cfg.yaml` as a child process."""

    def __init__(self, config: Path, env: dict[str, str] | None = None) -> None:
        self.config = config
        self.log_path = config.with_suffix(".log")
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "storegate", "edge", "-c", str(self.config)],
            stdout=log,
            stderr=log,
            cwd=REPO_ROOT,
            env=self.env,
        )
        log.close()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> int:
        self.signal(signal.SIGTERM)
        return self.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Watcher:
    """Subscribes to a node's whole tree; keeps every decoded message in arrival order.

    A persistent session (fixed client id, clean_session=False) so that, with a persistent
    broker, nothing published while the watcher itself reconnects is lost to it.
    """

    def __init__(
        self, host: str, port: int, *, topic: str = f"storegate/v1/{STORE}/{NODE}/#"
    ) -> None:
        self.messages: list[tuple[str, AnyMessage, bool]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"watcher-{uuid.uuid4().hex[:8]}",
            clean_session=False,
        )
        self.client.reconnect_delay_set(1, 1)

        def on_connect(client: mqtt.Client, *_: object) -> None:
            client.subscribe(topic, qos=1)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("watcher not subscribed")

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            message = decode(msg.payload, topic=msg.topic)
        except ValueError as exc:
            with self._lock:
                self.errors.append(f"{msg.topic}: {exc}")
            return
        with self._lock:
            self.messages.append((msg.topic, message, bool(msg.retain)))

    def of_type(self, type_name: str) -> list[AnyMessage]:
        with self._lock:
            return [m for _, m, _ in self.messages if m.type == type_name]

    def wait_for(
        self, predicate: Callable[[AnyMessage], bool], timeout: float = 20, what: str = "message"
    ) -> AnyMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for _, message, _ in self.messages:
                    if predicate(message):
                        return message
            time.sleep(0.05)
        raise TimeoutError(f"no {what} within {timeout}s")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stream_messages(watcher: Watcher, stream: str) -> list[AnyMessage]:
    with watcher._lock:
        return [m for _, m, _ in watcher.messages if m.stream == stream]


def assert_exactly_once_in_order(messages: list[AnyMessage]) -> list[int]:
    """Every seq 1..max present; a repeated seq only with the same msg_id; first arrivals
    in increasing seq order. Returns the distinct seqs."""
    first: dict[int, str] = {}
    order: list[int] = []
    for message in messages:
        if message.seq in first:
            assert first[message.seq] == message.msg_id, f"seq {message.seq} with two msg_ids"
            continue
        first[message.seq] = message.msg_id
        order.append(message.seq)
    assert order == sorted(order), "messages out of order on the stream"
    assert order == list(range(1, len(order) + 1)), (
        f"missing seqs: {sorted(set(range(1, max(order) + 1)) - set(order))[:20]}"
    )
    assert len(set(first.values())) == len(first), "one msg_id used for two seqs"
    return order
