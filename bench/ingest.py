"""Cloud ingest on one core vs a bare paho subscriber, same Mosquitto, same messages.

Both consumers drain the same number of pre-published messages from their persistent
session (published while they were offline), pinned to the same single core:

- baseline: a paho subscriber that does nothing with a message (paho acks it);
- subject: the cloud ingestor: decode and validate, dedup on (store, node, stream, seq),
  update live inventory in SQLite, spool time-series points, commit, then ack.

Payloads are realistic batched RFID messages: one `rfid.events` with 20 count deltas.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

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

STORE, NODE, READER = "store-bench", "pi-1", "reader-1"
DELTAS_PER_MESSAGE = 20
TARGET_RATIO = 0.7


def _messages(count: int) -> list[tuple[str, bytes]]:
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
            for k in range(DELTAS_PER_MESSAGE)
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


class _WithoutHistory:
    """For the comparison row: the ingestor with time-series turned off."""

    def lines(self, message: object) -> list[str]:
        return []

    async def append(self, lines: Sequence[str]) -> None:
        return None


async def _ingest(
    port: int, workdir: Path, client_id: str, count: int, *, warm: bool, history: bool = True
) -> float:
    from cloud.config import CloudSettings, IngestSettings, StoreConfig
    from cloud.ingest.history import History, SpoolHistory
    from cloud.runtime import CloudRuntime
    from cloud.timeseries import Spool

    settings = CloudSettings(
        mqtt=MqttSettings(port=port),
        ingest=IngestSettings(
            client_id=client_id, queue_size=5000, batch_max=1000, spool_dir=workdir / "spool"
        ),
        database_url=f"sqlite+aiosqlite:///{workdir}/{client_id}.db",
        stores=[StoreConfig(id=STORE, nodes=[NODE])],
    )
    # The spool takes the time-series lines before each commit, as in production; its pump
    # (draining to InfluxDB) is not part of the ingest path and does not run here.
    spool: Spool | None = None
    if history:
        spool = Spool(workdir / f"{client_id}-spool.db", capacity_bytes=4 * 1024**3)
        sink: History = SpoolHistory(spool)
    else:
        sink = _WithoutHistory()
    runtime = CloudRuntime(settings, history=sink)
    await runtime.start(serve_api=False)
    consumer = runtime.consumer
    if warm:  # only creates the session and the schema
        await asyncio.to_thread(consumer.connected.wait, 10)
        await asyncio.sleep(0.2)
        await runtime.stop()
        if spool is not None:
            spool.close()
        return 0.0
    deadline = time.monotonic() + 600
    while consumer.acked_total < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"ingestor acked {consumer.acked_total} of {count}")
        await asyncio.sleep(0.005)
    done = time.perf_counter()
    assert consumer.first_message_at is not None
    await runtime.stop()
    if spool is not None:
        spool.close()
    return done - consumer.first_message_at


def run(quick: bool) -> Result:
    count = 4_000 if quick else 30_000
    workdir = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    broker = Mosquitto(
        workdir,
        extra=[
            "persistence false",
            "max_queued_messages 0",  # the offline sessions hold the whole run
            "max_queued_bytes 0",
            "max_inflight_messages 0",
            "max_packet_size 1048576",
        ],
    )
    # Pin this process (both consumers, run one after the other) to one core; the broker
    # was started before and keeps the others.
    cpu = sorted(os.sched_getaffinity(0))[-1]
    os.sched_setaffinity(0, {cpu})
    try:
        messages = _messages(count)
        _create_session(broker.port, "bench-bare")
        asyncio.run(_ingest(broker.port, workdir, "bench-ingest", count, warm=True))
        asyncio.run(_ingest(broker.port, workdir, "bench-nohistory", count, warm=True))
        _publish(broker.port, messages)  # fans out into all three offline sessions
        bare_s = _bare_subscriber(broker.port, "bench-bare", count)
        ingest_s = asyncio.run(_ingest(broker.port, workdir, "bench-ingest", count, warm=False))
        plain_s = asyncio.run(
            _ingest(broker.port, workdir, "bench-nohistory", count, warm=False, history=False)
        )
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    bare_rate, ingest_rate = count / bare_s, count / ingest_s
    ratio = ingest_rate / bare_rate
    return Result(
        rows=[
            Row(
                "ingest messages/s (1 core)",
                ingest_rate,
                "msg/s",
                baseline=bare_rate,
                baseline_name="bare paho subscriber",
                target=f">= {TARGET_RATIO}x",
                passed=ratio >= TARGET_RATIO,
            ),
            Row(
                "ingest messages/s without time-series lines (1 core)",
                count / plain_s,
                "msg/s",
                baseline=bare_rate,
                baseline_name="bare paho subscriber",
            ),
            Row(
                "ingest events/s (20 count deltas per message)",
                ingest_rate * DELTAS_PER_MESSAGE,
                "events/s",
                baseline=bare_rate * DELTAS_PER_MESSAGE,
                baseline_name="bare paho subscriber",
            ),
        ],
        notes=[
            f"{count} rfid.events messages of {len(messages[0][1])} bytes pre-published into"
            " each consumer's persistent session (QoS 1), drained on one pinned core",
            "ingest: decode + validate, dedup, live inventory upserts in SQLite (WAL), "
            "time-series lines into the durable spool, commit, then PUBACK per message",
            "what bounds it, per message on this core: building the 20 line-protocol lines"
            " (cloud.timeseries, ~11 us per point) and contract validation"
            " (protocols.codec.decode, ~40 us), against ~70-80 us for paho to receive it",
        ],
    )


BENCHMARK = Benchmark(name="ingest", title="Cloud ingest vs bare paho subscriber", run=run)
