"""The load generator: one store recorded through the real edge, replayed as 20 stores from
two processes into a real `storegate cloud` (Mosquitto, SQLite), which must take every
message: no dead letter, no resync, no duplicate, every stream's seq gap-free and complete
in the cloud's state, each store's shelves from the birth."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from protocols.codec import decode
from protocols.mqtt import MqttSettings
from simulators.loadgen.fleet import ReplayPlan, replay
from simulators.loadgen.record import RecordOptions, record
from simulators.loadgen.recording import (
    RECORDED_STORE,
    Context,
    compile_template,
    load_recording,
    sent_time,
)
from simulators.loadgen.replay import store_id
from tests.cloud.cloudproc import CloudProcess, cloud_config
from tests.servers import MosquittoBroker, mosquitto

STORES = 20


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short recording of a small store (the shape of the real one: birth, rfid, lockers,
    ble, health), made once for the module."""
    workdir = tmp_path_factory.mktemp("loadgen-record")
    broker = mosquitto(workdir)
    broker.start()
    try:
        options = RecordOptions(shelves=4, stock_per_shelf=20, warmup_s=8, steady_s=8)
        rec = asyncio.run(record(MqttSettings(port=broker.port), options))
    finally:
        broker.stop()
    path = workdir / "store.jsonl"
    rec.save(path)
    return path


def test_recording_is_the_edge_traffic_after_a_full_birth(recording: Path) -> None:
    rec = load_recording(recording)
    assert rec.store == RECORDED_STORE
    # The snapshot holds the stock (4 shelves of 20; shoppers may have taken a few).
    assert 60 <= sum(s["count"] for s in rec.births[0]["shelves"]) <= 4 * 20
    types = Counter(m.type for m in rec.messages)
    assert types["health"] >= 1
    traffic = {"health", "rfid.events", "rfid.snapshot", "locker.events", "ble.presence"}
    assert set(types) <= traffic  # no lifecycle message, no ack of the resync
    assert all(0 <= m.t < rec.duration_s for m in rec.messages)
    # Every recorded seq is above the birth's position of its stream: already after it.
    position = {s["stream"]: s["seq"] for s in rec.births[0]["streams"]}
    assert all(m.payload["seq"] > position.get(m.stream, 0) for m in rec.messages)


def test_a_template_renders_a_valid_message_for_another_store(recording: Path) -> None:
    rec = load_recording(recording)
    for message in rec.messages:
        template = compile_template(message.payload, sent_time(message.payload))
        ctx = Context(store="store-x", seq=7, msg_id="abcdefgh12", bd_seq=3, sent_at=1.8e9)
        payload = template.render(ctx)
        topic = f"storegate/v1/store-x/{rec.node}/{message.stream}"
        decoded = decode(payload, topic=topic)  # the cloud's own check: schema and topic
        assert (decoded.store, decoded.seq, decoded.msg_id) == ("store-x", 7, "abcdefgh12")
        assert RECORDED_STORE not in payload.decode()
        # Times keep their distance from the send: sent_time is the send itself.
        assert abs(decoded.sent_time.timestamp() - 1.8e9) < 1e-3
        recorded_gap = sent_time(message.payload) - _time(message.payload["event_time"])
        replayed_gap = decoded.sent_time.timestamp() - decoded.event_time.timestamp()
        assert abs(recorded_gap - replayed_gap) < 1e-3


def _time(text: str) -> float:
    from simulators.loadgen.recording import parse_time

    return parse_time(text)


def test_twenty_stores_replayed_into_a_real_cloud(
    recording: Path, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    rec = load_recording(recording)
    stores = {store_id("lg", n): [rec.node] for n in range(1, STORES + 1)}
    cloud = CloudProcess(tmp_path, cloud_config(mosquitto_broker.port, tmp_path, stores=stores))
    cloud.start()
    try:
        plan = ReplayPlan(
            recording, STORES, processes=2, prefix="lg", speed=3.0, duration_s=6, drain_s=8
        )
        result = replay(plan, MqttSettings(port=mosquitto_broker.port))
        # Besides the traffic, per store: online status, birth, death, offline status.
        expected = result.published + result.births + 3 * STORES
        ingested = _wait_for(lambda: _ingested(cloud) >= expected, cloud, expected)
        dead = cloud.query("SELECT reason, detail FROM dead_letters")
        assert dead == []
        assert cloud.metric("storegate_resync_commands_total") == 0
        assert cloud.metric("storegate_messages_duplicate_total") == 0
        assert cloud.metric("storegate_gaps_given_up_total") == 0
        assert ingested == expected
    finally:
        cloud.terminate()
    assert result.connected_at_start == STORES
    assert result.lost == 0
    assert result.resyncs == 0
    assert result.other_commands == 0
    assert result.unconfirmed == 0  # every data message confirmed by a commit mark
    assert result.confirmed == sum(n for t, n in result.by_type.items() if t != "health")
    assert len(result.latencies_ms) == result.confirmed  # measured from the start (warmup 0)
    # Every data stream of every store is in the cloud up to the last seq the generator
    # assigned, gap-free (hw moves only over a complete prefix) and none beyond.
    sent = Counter(m.stream for m in rec.messages)
    rows = cloud.query("SELECT store_id, stream, hw FROM stream_positions")
    positions = {(store, stream): hw for store, stream, hw in rows}
    per_store = _published_per_stream(result.by_type, rec)
    for store in stores:
        shelves = cloud.query("SELECT SUM(count) FROM inventory WHERE store_id=?", store)
        assert shelves[0][0] is not None
        assert shelves[0][0] > 0
        for stream in sent:
            if stream == "health":
                continue
            assert positions[(store, stream)] >= 1
    total_hw = sum(hw for (s, stream), hw in positions.items() if stream in per_store)
    assert total_hw == sum(per_store.values())


def _published_per_stream(by_type: dict[str, int], rec: object) -> dict[str, int]:
    streams = {"rfid.events": "rfid/", "locker.events": "locker/", "ble.presence": "ble/"}
    out: dict[str, int] = {}
    for kind, n in by_type.items():
        if kind in streams:
            stream = next(m.stream for m in rec.messages if m.type == kind)  # type: ignore[attr-defined]
            out[stream] = out.get(stream, 0) + n
    return out


def _ingested(cloud: CloudProcess) -> int:
    import httpx

    text = httpx.get(f"{cloud.url}/metrics", timeout=5).text
    return int(
        sum(
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("storegate_messages_ingested_total")
        )
    )


def _wait_for(condition: object, cloud: CloudProcess, expected: int) -> int:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            break
        time.sleep(0.2)
    time.sleep(1.0)  # and nothing more than expected arrives
    got = _ingested(cloud)
    if got != expected:
        print(json.dumps({"ingested": got, "expected": expected}))
    return got
