"""Cloud ingest on one core vs a bare paho subscriber, same Mosquitto, same messages.

Both consumers drain the same number of pre-published messages from their persistent
session (published while they were offline), pinned to the same single core:

- baseline: a paho subscriber that does nothing with a message (paho acks it);
- subject: the cloud ingestor: decode and validate, dedup on (store, node, stream, seq),
  update live state in SQLite, spool time-series lines, commit, then ack.

Three workloads, each against its own broker:

- store traffic: what the real edge daemon publishes for simulated stores, recorded at the
  start of the run (`storegate sim --stores N`: shelves, lockers, beacons, health,
  lifecycle), played on in time (sequence numbers carried on) up to the message count;
- one count delta per message: the smallest useful message;
- 20 count deltas per message: a heavy batch, where per-event work dominates.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._support import Mosquitto
from bench.runner import Benchmark, Result, Row
from protocols.codec import encode, topic_for
from protocols.messages import CountDelta, RfidEvents, utc_now
from protocols.mqtt import MqttSettings
from protocols.topics import node_filter

if TYPE_CHECKING:
    from cloud.ingest.apply import BatchOutcome
    from cloud.ingest.consumer import Consumer

STORE, NODE, READER = "store-bench", "pi-1", "reader-1"
TARGET_RATIO = 0.7
BROKER_OPTIONS = [
    "persistence false",
    "max_queued_messages 0",  # the offline sessions hold the whole run
    "max_queued_bytes 0",
    "max_inflight_messages 0",
    "max_packet_size 1048576",
]

Messages = list[tuple[str, bytes]]


@dataclass
class Workload:
    name: str
    messages: Messages
    stores: dict[str, set[str]]  # store -> nodes, for the ingestor's registry
    events: int  # events (count deltas, item, locker and presence events) in `messages`


def _synthetic(count: int, deltas: int) -> Workload:
    messages = _count_deltas(count, deltas)
    return Workload(
        f"{deltas} count delta{'s' if deltas > 1 else ''} per message",
        messages,
        {STORE: {NODE}},
        count * deltas,
    )


def _count_deltas(count: int, deltas_per_message: int) -> Messages:
    now = utc_now()
    out = []
    for seq in range(1, count + 1):
        counts = [
            CountDelta(
                shelf=f"shelf-{(seq + k) % 200}",
                gtin=f"{80614141000000 + (seq * 7 + k) % 50:014d}",
                delta=1,
                count=seq % 40,
            )
            for k in range(deltas_per_message)
        ]
        message = RfidEvents(
            store=STORE,
            node=NODE,
            seq=seq,
            reader=READER,
            event_time=now + timedelta(milliseconds=seq),
            counts=counts,
        )
        out.append((topic_for(message), encode(message)))
    return out


def _v5_client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)


def _connect_persistent(client: paho.Client, port: int) -> None:
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    properties.SessionExpiryInterval = 3600
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)


def _create_session(port: int, client_id: str) -> None:
    """Subscribe once and leave: the broker now queues our messages while we are away."""
    done = threading.Event()
    client = _v5_client(client_id)
    client.on_connect = lambda c, *_: c.subscribe(node_filter(), qos=1)
    client.on_subscribe = lambda *_: done.set()
    _connect_persistent(client, port)
    client.loop_start()
    if not done.wait(10):
        raise RuntimeError("subscription not acknowledged")
    client.disconnect()
    client.loop_stop()


def _publish(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = _v5_client("bench-publisher")
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
    for info in infos:
        info.wait_for_publish(120)
    client.disconnect()
    client.loop_stop()


def _bare_subscriber(port: int, client_id: str, count: int) -> float:
    """Seconds from the first to the last of `count` queued messages, doing nothing."""
    received = 0
    first = 0.0
    done = threading.Event()

    def on_message(*_: object) -> None:
        nonlocal received, first
        if received == 0:
            first = time.perf_counter()
        received += 1
        if received == count:
            done.set()

    client = _v5_client(client_id)
    client.on_message = on_message
    _connect_persistent(client, port)
    client.loop_start()
    if not done.wait(300):
        raise RuntimeError(f"bare subscriber got {received} of {count}")
    elapsed = time.perf_counter() - first
    client.disconnect()
    client.loop_stop()
    return elapsed


# --------------------------------------------------------------------------- store traffic

_EVENT_LISTS = ("items", "counts", "events", "shelves")


def _record_store_traffic(stores: int, seconds: float) -> Messages:
    """Everything the real edge daemons of `stores` simulated stores publish in `seconds`."""
    with tempfile.TemporaryDirectory(prefix="bench-ingest-record-") as tmp:
        broker = Mosquitto(Path(tmp), extra=["max_queued_messages 100000"])
        recorded: Messages = []
        recorder = _v5_client("bench-recorder")
        subscribed = threading.Event()
        recorder.on_connect = lambda c, *_: c.subscribe(node_filter(), qos=1)
        recorder.on_subscribe = lambda *_: subscribed.set()
        recorder.on_message = lambda _c, _u, m: recorded.append((m.topic, bytes(m.payload)))
        try:
            recorder.connect("127.0.0.1", broker.port)
            recorder.loop_start()
            if not subscribed.wait(10):
                raise RuntimeError("recorder subscription not acknowledged")
            command = [sys.executable, "-m", "storegate", "sim", "--stores", str(stores)]
            command += ["--duration", str(seconds), "--port", str(broker.port)]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=seconds + 120)
            time.sleep(0.5)  # the last messages in flight to the recorder
        finally:
            recorder.disconnect()
            recorder.loop_stop()
            broker.stop()
    return list(recorded)


_LIFECYCLE = frozenset({"status", "birth", "death"})


def _store_traffic(recorded: Messages, count: int) -> Workload:
    """`recorded` played on in time until there are `count` messages: each further round
    is the recording's steady traffic again with every stream's sequence numbers carried on
    (and fresh message ids), so the same stores' streams simply go on, as in a running
    fleet. Status, birth and death happen once per connection, so only in the first round."""
    parsed = []
    low: dict[tuple[str, str, str], int] = {}
    high: dict[tuple[str, str, str], int] = {}
    for topic, payload in recorded:
        data = json.loads(payload)
        if "store" not in data or topic.split("/")[2] != data["store"]:
            continue  # not a store's own stream
        key = (data["store"], data["node"], data["stream"])
        low[key] = min(low.get(key, data["seq"]), data["seq"])
        high[key] = max(high.get(key, data["seq"]), data["seq"])
        parsed.append((topic, payload, data, key))
    if not parsed:
        raise RuntimeError("the simulated stores published nothing")
    steady = [entry for entry in parsed if entry[2]["type"] not in _LIFECYCLE]
    messages: Messages = [(topic, payload) for topic, payload, _, _ in parsed]
    events = sum(_events(data) for _, _, data, _ in parsed)
    rounds = 1
    while len(messages) < count:
        for topic, _, data, key in steady:
            shift = rounds * (high[key] - low[key] + 1)
            again = {
                **data,
                "seq": data["seq"] + shift,
                "msg_id": f"r{rounds}{data['msg_id']}"[:64],
            }
            messages.append((topic, json.dumps(again, separators=(",", ":")).encode()))
            events += _events(data)
        rounds += 1
    stores: dict[str, set[str]] = {}
    for _, _, data, _ in parsed:
        stores.setdefault(data["store"], set()).add(data["node"])
    return Workload(
        f"store traffic ({len(stores)} stores, {len(parsed)} messages recorded, {rounds} rounds)",
        messages,
        stores,
        events,
    )


def _events(data: dict[str, object]) -> int:
    return sum(len(value) for key in _EVENT_LISTS if isinstance(value := data.get(key), list))


# --------------------------------------------------------------------------- the runs


async def _ingest(
    port: int, workdir: Path, client_id: str, workload: Workload, *, warm: bool
) -> float:
    from cloud.config import CloudSettings, IngestSettings, StoreConfig
    from cloud.ingest.history import SpoolHistory
    from cloud.runtime import CloudRuntime
    from cloud.timeseries import Spool

    settings = CloudSettings(
        mqtt=MqttSettings(port=port),
        ingest=IngestSettings(
            client_id=client_id, queue_size=5000, batch_max=1000, spool_dir=workdir / "spool"
        ),
        database_url=f"sqlite+aiosqlite:///{workdir}/{client_id}.db",
        stores=[StoreConfig(id=s, nodes=sorted(n)) for s, n in sorted(workload.stores.items())],
    )
    # The spool takes the time-series lines before each commit, as in production; its pump
    # (draining to InfluxDB) is not part of the ingest path and does not run here.
    spool = Spool(workdir / f"{client_id}-spool.db", capacity_bytes=4 * 1024**3)
    runtime = CloudRuntime(settings, history=SpoolHistory(spool))
    await runtime.start(serve_api=False)
    consumer = runtime.consumer
    try:
        if warm:  # only creates the session and the schema
            await asyncio.to_thread(consumer.connected.wait, 10)
            await asyncio.sleep(0.2)
            return 0.0
        return await _drained(consumer, len(workload.messages), "ingestor", timeout_s=900)
    finally:
        await runtime.stop()
        spool.close()


async def _drained(consumer: Consumer, count: int, who: str, *, timeout_s: float) -> float:
    """Seconds from the consumer's first delivery until it has acked `count` messages."""
    deadline = time.monotonic() + timeout_s
    while consumer.acked_total < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{who} acked {consumer.acked_total} of {count}")
        await asyncio.sleep(0.005)
    done = time.perf_counter()
    assert consumer.first_message_at is not None
    return done - consumer.first_message_at


class _NoState:
    """Applies nothing: what is left of the ingestor is its MQTT side (receive, batch, ack)."""

    async def apply(self, batch: Sequence[object]) -> BatchOutcome:
        from cloud.ingest.apply import BatchOutcome

        return BatchOutcome(applied=len(batch))


async def _mqtt_side(port: int, client_id: str, count: int, *, warm: bool) -> float:
    """Seconds for the ingest consumer (its paho client, batching, acks) to take `count`
    queued messages with no decoding and no state: the receive path alone."""
    from cloud.bus import LiveBus
    from cloud.config import CloudSettings, IngestSettings
    from cloud.ingest.consumer import Consumer
    from cloud.metrics import CloudMetrics

    settings = CloudSettings(
        mqtt=MqttSettings(port=port),
        ingest=IngestSettings(client_id=client_id, queue_size=5000, batch_max=1000),
    )
    consumer = Consumer(settings, _NoState(), CloudMetrics(), LiveBus(16))  # type: ignore[arg-type]
    consumer.start()
    worker = asyncio.create_task(consumer.run())
    try:
        if not await asyncio.to_thread(consumer.connected.wait, 10):
            raise RuntimeError("MQTT-side consumer did not connect")
        if warm:  # only creates the session
            await asyncio.sleep(0.2)
            return 0.0
        return await _drained(consumer, count, "MQTT-side consumer", timeout_s=300)
    finally:
        consumer.stop()
        await worker
        await consumer.close()


@dataclass
class _Rates:
    bare: float  # messages/s
    ingest: float
    mqtt_side: float | None = None


def _measure(workload: Workload, *, mqtt_side: bool = False) -> _Rates:
    """Messages/s of the bare paho subscriber and of the ingestor (and, if asked, of the
    ingestor's MQTT side alone) for one workload, on its own broker."""
    count = len(workload.messages)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = Mosquitto(workdir, extra=BROKER_OPTIONS)
    try:
        _create_session(broker.port, "bench-bare")
        asyncio.run(_ingest(broker.port, workdir, "bench-ingest", workload, warm=True))
        if mqtt_side:
            asyncio.run(_mqtt_side(broker.port, "bench-mqtt-side", count, warm=True))
        _publish(broker.port, workload.messages)  # fans out into the offline sessions
        bare_s = _bare_subscriber(broker.port, "bench-bare", count)
        ingest_s = asyncio.run(_ingest(broker.port, workdir, "bench-ingest", workload, warm=False))
        side_s = (
            asyncio.run(_mqtt_side(broker.port, "bench-mqtt-side", count, warm=False))
            if mqtt_side
            else None
        )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return _Rates(count / bare_s, count / ingest_s, None if side_s is None else count / side_s)


def run(quick: bool) -> Result:
    count = 4_000 if quick else 30_000
    stores, seconds = (4, 20.0) if quick else (10, 60.0)
    recorded = _record_store_traffic(stores, seconds)  # before pinning: the sim needs cores
    workloads: list[Callable[[], Workload]] = [
        lambda: _store_traffic(recorded, count),
        lambda: _synthetic(count, 1),
        lambda: _synthetic(count, 20),
    ]
    # Pin this process (both consumers, run one after the other) to one core; the broker
    # was started before and keeps the others.
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    rows: list[Row] = []
    notes: list[str] = []
    for i, make in enumerate(workloads):
        workload = make()
        rates = _measure(workload, mqtt_side=i == 0)
        bare_rate, ingest_rate = rates.bare, rates.ingest
        ratio = ingest_rate / bare_rate
        per_message = workload.events / len(workload.messages)
        size = sum(len(p) for _, p in workload.messages) / len(workload.messages)
        rows.append(
            Row(
                f"ingest messages/s, {workload.name}",
                ingest_rate,
                "msg/s",
                baseline=bare_rate,
                baseline_name="bare paho subscriber",
                target=f">= {TARGET_RATIO}x" if i == 0 else None,
                passed=ratio >= TARGET_RATIO if i == 0 else None,
            )
        )
        rows.append(
            Row(
                f"ingest events/s, {workload.name}",
                ingest_rate * per_message,
                "events/s",
            )
        )
        if rates.mqtt_side is not None:
            rows.append(
                Row(
                    f"ingest MQTT side alone (no decoding, no state), {workload.name}",
                    rates.mqtt_side,
                    "msg/s",
                    baseline=bare_rate,
                    baseline_name="bare paho subscriber",
                )
            )
        notes.append(
            f"{workload.name}: {len(workload.messages)} messages, {size:.0f} bytes and"
            f" {per_message:.1f} events per message on average"
        )
    notes += [
        f"store traffic recorded from `storegate sim --stores {stores} --duration"
        f" {seconds:.0f}` (the real edge daemon per store, simulated devices); the target"
        " is judged on it, as the mix a fleet of stores sends",
        "each workload: its messages pre-published into both consumers' persistent sessions"
        " (QoS 1) on a fresh Mosquitto, then drained one after the other on one pinned core",
        "ingest: decode + validate (one pass in pydantic-core), dedup, live state in SQLite"
        " (WAL), time-series lines into the durable spool, commit, then PUBACK per message",
        "per-event work (validation, line protocol, inventory upserts) is what separates the"
        " rows: the bare subscriber's cost does not grow with the events in a message",
        "the ingestor's paho client is tuned for this flood (cloud/ingest/mqtt_client.py:"
        " 64 KiB read-ahead instead of 3-4 recv calls per packet; a PUBLISH without MQTT 5"
        " properties skips paho's Properties and MQTTMessage objects); the baseline is stock"
        " paho, as the target says. The 'MQTT side alone' row is that receive path with"
        " nothing applied: how much of the ingestor's time is MQTT, and how much is the work",
    ]
    return Result(rows=rows, notes=notes)


BENCHMARK = Benchmark(name="ingest", title="Cloud ingest vs bare paho subscriber", run=run)
