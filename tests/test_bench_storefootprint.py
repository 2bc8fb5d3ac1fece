"""The store-footprint benchmark measures only what the daemon says it holds: its heartbeat,
read over a real Mosquitto, and the share of items that must be present."""

from __future__ import annotations

import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench.storefootprint import NODE, STORE, HealthWatch, enough_present
from protocols.codec import encode
from protocols.messages import DeviceKind, DriverHealth, DriverState, Health, OutboxHealth
from tests.servers import MosquittoBroker


def _heartbeat(
    seq: int, present: list[int], tracked: list[int], locker: DriverState | None = None
) -> bytes:
    return encode(
        Health(
            store=STORE,
            node=NODE,
            seq=seq,
            version="test",
            bd_seq=1,
            uptime_s=1.0,
            cpu_percent=1.0,
            rss_bytes=50_000_000,
            disk_free_bytes=1,
            outbox=OutboxHealth(depth=0, bytes=0, capacity_bytes=1, oldest_age_s=None),
            drivers=[
                DriverHealth(
                    device=f"reader-{i}",
                    kind=DeviceKind.RFID_READER,
                    state=DriverState.RUNNING,
                    events_per_s=0.0,
                    metrics={"items_present": float(p), "tags_tracked": float(t)},
                )
                for i, (p, t) in enumerate(zip(present, tracked, strict=True))
            ]
            + (
                []
                if locker is None
                else [
                    DriverHealth(
                        device="bank-a",
                        kind=DeviceKind.LOCKER_BANK,
                        state=locker,
                        events_per_s=0.0,
                        metrics={"compartments": 16.0, "polls": 40.0},
                    )
                ]
            ),
        )
    )


def test_the_share_present_boundary() -> None:
    assert enough_present(19_800, 20_000)
    assert not enough_present(19_799, 20_000)
    assert enough_present(0, 0)  # the empty store's baseline needs no item


def test_heartbeats_are_summed_over_the_readers(mosquitto_broker: MosquittoBroker) -> None:
    watch = HealthWatch(mosquitto_broker.port)
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-daemon")
    client.connect("127.0.0.1", mosquitto_broker.port)
    client.loop_start()
    topic = f"storegate/v1/{STORE}/{NODE}/health"
    try:
        since = time.monotonic()
        client.publish(topic, _heartbeat(1, [100, 250], [110, 260]), qos=1).wait_for_publish(5)
        counts = watch.fresh(since, 5.0)
        assert counts is not None
        assert (counts.present, counts.tracked, counts.lockers_running) == (350, 370, 0)
        # a locker bank has no items: not summed, counted only when RUNNING
        for state, running in ((DriverState.RUNNING, 1), (DriverState.DEGRADED, 0)):
            since = time.monotonic()
            message = _heartbeat(2, [100, 250], [110, 260], locker=state)
            client.publish(topic, message, qos=1).wait_for_publish(5)
            counts = watch.fresh(since, 5.0)
            assert counts is not None
            assert (counts.present, counts.tracked, counts.lockers_running) == (350, 370, running)
        # a heartbeat without the readers' counts is not taken for zero items
        since = time.monotonic()
        bad = b'{"drivers": [{"kind": "rfid_reader", "state": "running", "metrics": {}}]}'
        client.publish(topic, bad, qos=1).wait_for_publish(5)
        assert watch.fresh(since, 1.0) is None
        assert watch.errors
        assert "items_present" in watch.errors[-1]
    finally:
        client.loop_stop()
        client.disconnect()
        watch.stop()
