"""Edge messages as a store node publishes them, stamped now (the chart shows the last hour)."""

from __future__ import annotations

from datetime import datetime

from protocols.codec import encode, topic_for
from protocols.messages import (
    Birth,
    CompartmentStatus,
    CountDelta,
    DeviceInfo,
    DeviceKind,
    DriverHealth,
    DriverState,
    Health,
    Message,
    NodeState,
    OutboxHealth,
    RfidEvents,
    ShelfCount,
    Status,
    StreamPosition,
    utc_now,
)
from tests.mqtt_helpers import publisher
from tests.servers import MosquittoBroker

STORE, NODE, OTHER_NODE, READER = "store-042", "pi-front", "pi-back", "reader-1"
OTHER_STORE = "store-007"
GTIN_A, GTIN_B = "80614141123458", "80614141000017"
SHELF_A, SHELF_B = "aisle3-shelf2", "aisle3-shelf1"


def birth(
    bd_seq: int,
    shelves: dict[tuple[str, str], int],
    *,
    node: str = NODE,
    compartments: dict[str, list[CompartmentStatus]] | None = None,
) -> Birth:
    return Birth(
        store=STORE,
        node=node,
        seq=0,
        bd_seq=bd_seq,
        version="0.4.2",
        devices=[DeviceInfo(device=READER, kind=DeviceKind.RFID_READER, driver="sim-llrp")],
        streams=[StreamPosition(stream=f"rfid/{READER}", seq=0)],
        shelves=[ShelfCount(shelf=s, gtin=g, count=c) for (s, g), c in shelves.items()],
        compartments=compartments or {},
    )


def count_change(
    seq: int, shelf: str, gtin: str, count: int, delta: int, *, at: datetime | None = None
) -> RfidEvents:
    return RfidEvents(
        store=STORE,
        node=NODE,
        seq=seq,
        reader=READER,
        event_time=at or utc_now(),
        counts=[CountDelta(shelf=shelf, gtin=gtin, delta=delta, count=count)],
    )


def heartbeat(seq: int, bd_seq: int, *, depth: int, reader_state: DriverState) -> Health:
    return Health(
        store=STORE,
        node=NODE,
        seq=seq,
        version="0.4.2",
        bd_seq=bd_seq,
        uptime_s=812.0,
        cpu_percent=4.5,
        rss_bytes=48_000_000,
        disk_free_bytes=9_000_000_000,
        outbox=OutboxHealth(
            depth=depth, bytes=depth * 700, capacity_bytes=64_000_000, oldest_age_s=0.4, dropped={}
        ),
        drivers=[
            DriverHealth(
                device=READER, kind=DeviceKind.RFID_READER, state=reader_state, events_per_s=42.0
            )
        ],
    )


def offline(bd_seq: int, *, node: str = NODE) -> Status:
    return Status(store=STORE, node=node, seq=0, state=NodeState.OFFLINE, bd_seq=bd_seq)


class EdgePublisher:
    """A paho client publishing QoS 1 to the real broker, as the edge daemon would."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = publisher(broker.host, broker.port)

    def send(self, *messages: Message) -> None:
        for message in messages:
            self.client.publish(topic_for(message), encode(message), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
