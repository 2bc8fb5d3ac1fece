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
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._support import Mosquitto, Postgres
from bench.runner import Benchmark, Result, Row
from protocols.mqtt import MqttSettings
from protocols.topics import node_filter
from simulators.loadgen.recording import events_in, load_recording, render_traffic
from simulators.loadgen.replay import store_id

if TYPE_CHECKING:
    from cloud.ingest.apply import BatchOutcome
    from cloud.ingest.consumer import Consumer

STORE, NODE, READER = "store-bench", "pi-1", "reader-1"
TARGET_RATIO = 1.0
RUNS = 5
RECORDING = Path(__file__).parent / "recordings" / "default-store.jsonl"
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


# --------------------------------------------------------------------------- the runs


async def _ingest(
    port: int, workdir: Path, client_id: str, workload: Workload, *, warm: bool, database_url: str
) -> float:
    from cloud.config import CloudSettings, IngestSettings, StoreConfig
    from cloud.ingest.history import SpoolHistory
    from cloud.runtime import CloudRuntime
    from cloud.timeseries import Spool

    settings = CloudSettings(
        mqtt=MqttSettings(port=port),
        # The default configuration: only what names this run (client id, files, broker).
        ingest=IngestSettings(client_id=client_id, spool_dir=workdir / "spool"),
        database_url=database_url,
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
        ingest=IngestSettings(client_id=client_id),
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
    mqtt_side: float


def _measure(workload: Workload, database_url: str) -> _Rates:
    """Messages/s of the stock paho subscriber, of the ingestor and of the ingestor's MQTT
    side alone for one workload, on a fresh broker, drained one after the other."""
    count = len(workload.messages)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = Mosquitto(workdir, extra=BROKER_OPTIONS)
    try:
        _create_session(broker.port, "bench-bare")
        asyncio.run(
            _ingest(
                broker.port, workdir, "bench-ingest", workload, warm=True, database_url=database_url
            )
        )
        asyncio.run(_mqtt_side(broker.port, "bench-mqtt-side", count, warm=True))
        _publish(broker.port, workload.messages)  # fans out into the offline sessions
        bare_s = _bare_subscriber(broker.port, "bench-bare", count)
        ingest_s = asyncio.run(
            _ingest(
                broker.port,
                workdir,
                "bench-ingest",
                workload,
                warm=False,
                database_url=database_url,
            )
        )
        side_s = asyncio.run(_mqtt_side(broker.port, "bench-mqtt-side", count, warm=False))
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return _Rates(count / bare_s, count / ingest_s, count / side_s)


def _store_traffic(stores: int, count: int) -> Workload:
    recording = load_recording(RECORDING)
    ids = [store_id("bench", n) for n in range(1, stores + 1)]
    messages = render_traffic(recording, ids, count, start=time.time())
    events = sum(events_in(json.loads(p)) for _, p in messages)
    return Workload(
        f"store traffic ({stores} stores replayed from one recorded store)",
        messages,
        {store: {recording.node} for store in ids},
        events,
    )


def _spread(values: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(values), (min(values), max(values))


def run(quick: bool) -> Result:
    count, runs, stores = (3_000, 2, 20) if quick else (20_000, RUNS, 100)
    workload = _store_traffic(stores, count)
    # Pin this process (all consumers, run one after the other) to one core; the brokers
    # and PostgreSQL keep the others.
    cpu = sorted(os.sched_getaffinity(0))[-1]
    postgres = Postgres()
    try:
        os.sched_setaffinity(0, {cpu})
        rates: dict[str, list[_Rates]] = {"SQLite": [], "PostgreSQL": []}
        loads: list[float] = []
        for number in range(runs):
            for name in rates:
                url = (
                    postgres.create_database(f"ingest{number}")
                    if name == "PostgreSQL"
                    else f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='bench-ingest-db-')}/cloud.db"
                )
                rates[name].append(_measure(workload, url))
                loads.append(os.getloadavg()[0])
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        postgres.stop()
    bare = [r.bare for rs in rates.values() for r in rs]
    side = [r.mqtt_side for rs in rates.values() for r in rs]
    bare_median, bare_spread = _spread(bare)
    rows: list[Row] = []
    per_message = workload.events / len(workload.messages)
    for name, measured in rates.items():
        value, spread = _spread([r.ingest for r in measured])
        rows.append(
            Row(
                f"ingest messages/s, {name}, {workload.name}",
                value,
                "msg/s",
                baseline=bare_median,
                baseline_name="stock paho subscriber, median",
                target=f">= {TARGET_RATIO}x",
                passed=value >= TARGET_RATIO * bare_median,
                spread=spread,
            )
        )
        rows.append(Row(f"ingest events/s, {name}", value * per_message, "events/s"))
    side_value, side_spread = _spread(side)
    rows += [
        Row(
            "tuned client doing nothing (the ingestor's MQTT side alone)",
            side_value,
            "msg/s",
            baseline=bare_median,
            baseline_name="stock paho subscriber, median",
            spread=side_spread,
        ),
        Row("stock paho subscriber (acks each message)", bare_median, "msg/s", spread=bare_spread),
    ]
    size = sum(len(p) for _, p in workload.messages) / len(workload.messages)
    notes = [
        f"{workload.name}: {len(workload.messages)} messages (births, then rfid, locker, ble and"
        f" health in time order), {size:.0f} bytes and {per_message:.1f} events per message on"
        f" average; recording {RECORDING.name} (see the scale section)",
        f"median of {runs} runs per row, min to max in brackets; every run: a fresh Mosquitto,"
        " the messages pre-published into the persistent sessions (QoS 1) of the three"
        " consumers, then drained one after the other by this process pinned to one core: the"
        " stock paho subscriber (paho acks each message), the ingestor, the ingestor's MQTT"
        " side with nothing applied; both baselines are the medians over all runs",
        "the ingestor in its default configuration (no batch or queue settings): decode +"
        " validate, dedup, live state, time-series lines into the durable spool, commit, then"
        " PUBACK per message; SQLite in WAL mode; PostgreSQL in its default configuration"
        " (fsync on) on this machine",
        f"a 2-core machine shared with other agents' jobs: load average 1 min"
        f" {min(loads):.1f} to {max(loads):.1f} during the runs; ratios move less than rates",
    ]
    return Result(rows=rows, notes=notes)


BENCHMARK = Benchmark(name="ingest", title="Cloud ingest vs stock paho subscriber", run=run)
