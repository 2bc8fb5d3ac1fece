"""Record one store's real traffic: `storegate loadgen record store.jsonl --port 1883`.

One simulated store (the real `EdgeRuntime` with sim-llrp, sim-cu16 and sim-ble, the default
scenario's people, by default 20 shelves of 150 items) runs against a broker. A recorder
subscribes to the node's topics and plays the cloud's part the edge depends on: after each
message of an outbox stream it publishes the node's retained `committed` mark, so the edge's
outbox drains as it would with a cloud (no resends, no stall births). After the warm-up
(every item seen, the shelves settled) the recorder sends a `resync` command: the birth that
answers it carries the full snapshot, and everything published after it, for `steady_s`
seconds, is the traffic a replay loops. Acks (of that resync) are left out: a replay has no
commands to answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from protocols.codec import encode, topic_for
from protocols.messages import Command, CommitMark, Committed, new_message_id, utc_now
from protocols.mqtt import MqttSettings, new_client
from protocols.topics import LIFECYCLE_STREAMS, node_filter
from simulators.loadgen.recording import RECORDED_STORE, RecordedMessage, Recording, sent_time
from simulators.scenario.model import BrokerSection, Scenario, StoreSection
from simulators.scenario.store import SimulatedStore

log = logging.getLogger(__name__)

NODE = "pi-1"
_NOT_TRAFFIC = frozenset({"status", "birth", "death", "ack", "committed", "command"})


@dataclass(frozen=True, slots=True)
class RecordOptions:
    shelves: int = 20
    stock_per_shelf: int = 150
    products_per_shelf: int = 8
    warmup_s: float = 45.0
    steady_s: float = 120.0
    seed: int = 1


class _Recorder:
    """Subscribes to the node's topics (paho's own thread); confirms what it receives."""

    def __init__(self, mqtt: MqttSettings) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self._latest: dict[str, int] = {}
        self._marks = 0
        self._subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = new_client(mqtt, f"loadgen-recorder-{new_message_id()[:8]}", clean_start=True)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.mqtt = mqtt

    def start(self) -> None:
        self.client.connect(self.mqtt.host, self.mqtt.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the recorder's subscription was not acknowledged")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(node_filter(RECORDED_STORE, NODE), qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except ValueError:
            log.error("recorder: a payload that is not JSON on %s", message.topic)
            return
        if not isinstance(payload, dict) or payload.get("type") in ("committed", "command"):
            return
        with self._lock:
            self.received.append((time.time(), payload))
        stream = str(payload.get("stream", ""))
        if stream and stream not in LIFECYCLE_STREAMS:
            self._latest[stream] = max(self._latest.get(stream, 0), int(payload["seq"]))
            self._marks += 1
            mark = Committed(
                store=RECORDED_STORE,
                node=NODE,
                seq=self._marks,
                streams=[CommitMark(stream=s, seq=q) for s, q in sorted(self._latest.items())],
            )
            self.client.publish(topic_for(mark), encode(mark), qos=1, retain=True)

    def resync(self) -> None:
        command = Command(
            store=RECORDED_STORE,
            node=NODE,
            seq=1,
            name="resync",
            correlation_id=new_message_id(),
            expires_at=utc_now() + timedelta(seconds=60),
        )
        self.client.publish(topic_for(command), encode(command), qos=1)

    def taken(self) -> list[tuple[float, dict[str, Any]]]:
        with self._lock:
            return list(self.received)


def scenario_for(options: RecordOptions, broker: MqttSettings) -> Scenario:
    return Scenario(
        seed=options.seed,
        broker=BrokerSection(host=broker.host, port=broker.port, protocol=broker.protocol),
        stores=[
            StoreSection(
                id=RECORDED_STORE,
                name="recorded for the load generator",
                node=NODE,
                shelves=options.shelves,
                stock_per_shelf=options.stock_per_shelf,
                products_per_shelf=options.products_per_shelf,
            )
        ],
    )


async def record(mqtt: MqttSettings, options: RecordOptions) -> Recording:
    """Run the store, ask for a birth after the warm-up, record `steady_s` after it."""
    scenario = scenario_for(options, mqtt)
    recorder = _Recorder(mqtt)
    await asyncio.to_thread(recorder.start)
    try:
        with tempfile.TemporaryDirectory(prefix="storegate-loadgen-record-") as state_dir:
            store = SimulatedStore(
                scenario,
                scenario.stores[0],
                mqtt=scenario.broker.settings().model_copy(update={"protocol": mqtt.protocol}),
                state_dir=Path(state_dir),
                seed=options.seed * 10_007,
            )
            store.start()
            try:
                await asyncio.sleep(options.warmup_s)
                asked = time.time()
                recorder.resync()
                await asyncio.sleep(options.steady_s)
                # What the birth's seq positions put in its snapshot is known only once it
                # arrived; the steady window is measured from it, so wait for the rest.
                birth_at = _birth_after(recorder.taken(), asked)
                if birth_at is None:
                    raise RuntimeError("the edge did not answer the resync with a birth")
                left = birth_at + options.steady_s - time.time()
                if left > 0:
                    await asyncio.sleep(left)
            finally:
                await store.stop()
    finally:
        await asyncio.to_thread(recorder.stop)
    return _recording(recorder.taken(), asked, options, scenario)


def _birth_after(received: list[tuple[float, dict[str, Any]]], asked: float) -> float | None:
    for at, payload in received:
        if at >= asked and payload.get("type") == "birth":
            return at
    return None


def _recording(
    received: list[tuple[float, dict[str, Any]]],
    asked: float,
    options: RecordOptions,
    scenario: Scenario,
) -> Recording:
    births = [p for at, p in received if at >= asked and p.get("type") == "birth"]
    if not births:
        raise RuntimeError("the edge did not answer the resync with a birth")
    first = births[0]
    parts = [p for p in births if p.get("bd_seq") == first["bd_seq"] and p["seq"] >= first["seq"]]
    parts = parts[: int(first.get("parts", 1))]
    birth_at = next(at for at, p in received if p is first)
    position = {str(s["stream"]): int(s["seq"]) for s in first.get("streams", [])}
    messages: list[RecordedMessage] = []
    seen: set[tuple[str, int]] = set()
    end = birth_at + options.steady_s
    for at, payload in received:
        if at < birth_at or at >= end or payload.get("type") in _NOT_TRAFFIC:
            continue
        stream, seq = str(payload["stream"]), int(payload["seq"])
        if seq <= position.get(stream, -1) or (stream, seq) in seen:
            continue  # in the birth's snapshot already, or a resend
        seen.add((stream, seq))
        # Replays are scheduled on the edge's own send time (the recorder's arrival adds
        # the broker's delay); the loop's t = 0 is the birth's.
        messages.append(RecordedMessage(max(0.0, sent_time(payload) - sent_time(first)), payload))
    items = sum(int(s["count"]) for p in parts for s in p.get("shelves", []))
    about = {
        "scenario": scenario.stores[0].model_dump(mode="json", exclude={"id", "name"}),
        "behaviour": scenario.behaviour.model_dump(mode="json"),
        "report_interval_s": scenario.report_interval_s,
        "health_interval_s": scenario.health_interval_s,
        "warmup_s": options.warmup_s,
        "items_in_birth": items,
        "recorded": utc_now().isoformat(),
    }
    return Recording(
        store=RECORDED_STORE,
        node=NODE,
        duration_s=options.steady_s,
        births=parts,
        messages=sorted((m for m in messages if m.t < options.steady_s), key=lambda m: m.t),
        about=about,
    )
