"""One realistic instance of every message type, for round-trip and schema tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from protocols.messages import (
    AckStatus,
    Birth,
    BlePresence,
    Command,
    CommandAck,
    CommitMark,
    Committed,
    CompartmentEvent,
    CompartmentFlag,
    CompartmentState,
    CompartmentStatus,
    CountDelta,
    Death,
    DeviceInfo,
    DeviceKind,
    DriverHealth,
    DriverState,
    Health,
    ItemEvent,
    ItemEventKind,
    LockerEvents,
    LockerSnapshot,
    Message,
    NodeState,
    Offer,
    OfferTrigger,
    OrderUpdate,
    OutboxHealth,
    PresenceEvent,
    PresenceKind,
    RfidEvents,
    RfidSnapshot,
    SeqRange,
    ShelfCount,
    Status,
    StreamPosition,
    ZoneOccupancy,
)

T0 = datetime(2026, 11, 23, 9, 30, 0, 123456, tzinfo=UTC)
STORE, NODE = "store-042", "pi-front"
EPC = "3074257BF7194E4000001A85"  # urn:epc:id:sgtin:0614141.812345.6789
GTIN = "80614141123458"


def all_samples() -> list[Message]:
    env = {"store": STORE, "node": NODE, "event_time": T0, "sent_time": T0}
    return [
        Status(**env, seq=0, state=NodeState.ONLINE, bd_seq=7, version="0.1.0"),
        Birth(
            **env,
            seq=0,
            bd_seq=7,
            version="0.1.0",
            devices=[
                DeviceInfo(device="reader-1", kind=DeviceKind.RFID_READER, driver="llrp"),
                DeviceInfo(device="bank-a", kind=DeviceKind.LOCKER_BANK, driver="cu16"),
            ],
            streams=[
                StreamPosition(
                    stream="rfid/reader-1",
                    seq=41,
                    kept_from=30,
                    dropped=[SeqRange(first=33, last=34)],
                )
            ],
            shelves=[ShelfCount(shelf="aisle3-shelf2", gtin=GTIN, count=12)],
            compartments={
                "bank-a": [CompartmentStatus(compartment="c01", state=CompartmentState.AVAILABLE)]
            },
            zones=[ZoneOccupancy(zone="entrance", beacons=["app:7f3a9c"])],
        ),
        Death(**env, seq=3, bd_seq=7),
        Health(
            **env,
            seq=12,
            version="0.1.0",
            bd_seq=7,
            uptime_s=3600.5,
            cpu_percent=3.2,
            rss_bytes=41_000_000,
            disk_free_bytes=12_000_000_000,
            outbox=OutboxHealth(
                depth=3, bytes=2048, capacity_bytes=64_000_000, oldest_age_s=1.5, dropped={}
            ),
            drivers=[
                DriverHealth(
                    device="reader-1",
                    kind=DeviceKind.RFID_READER,
                    state=DriverState.RUNNING,
                    events_per_s=310.0,
                    metrics={"reads_per_s": 310.0},
                )
            ],
        ),
        RfidEvents(
            **env,
            seq=42,
            reader="reader-1",
            items=[
                ItemEvent(
                    kind=ItemEventKind.ARRIVED,
                    epc=EPC,
                    gtin=GTIN,
                    shelf="aisle3-shelf2",
                    at=T0,
                    rssi=-52.5,
                ),
                ItemEvent(kind=ItemEventKind.DEPARTED, epc="E2801160600002040D9B4A21", at=T0),
            ],
            counts=[CountDelta(shelf="aisle3-shelf2", gtin=GTIN, delta=1, count=13)],
        ),
        RfidSnapshot(
            **env,
            seq=43,
            reader="reader-1",
            shelves=[ShelfCount(shelf="aisle3-shelf2", gtin=GTIN, count=13)],
        ),
        LockerEvents(
            **env,
            seq=5,
            bank="bank-a",
            events=[
                CompartmentEvent(
                    compartment="c01",
                    state=CompartmentState.PICKUP_OPEN,
                    previous=CompartmentState.AWAITING_PICKUP,
                    cause="code_ok",
                    door_open=True,
                    occupied=True,
                    order_ref="ord-1001",
                    at=T0,
                ),
                CompartmentEvent(
                    compartment="c02",
                    state=CompartmentState.OUT_OF_SERVICE,
                    cause="forced_open",
                    flags=[CompartmentFlag.FORCED_OPEN],
                    at=T0,
                ),
            ],
        ),
        LockerSnapshot(
            **env,
            seq=6,
            bank="bank-a",
            compartments=[CompartmentStatus(compartment="c01", state=CompartmentState.RESERVED)],
        ),
        BlePresence(
            **env,
            seq=9,
            scanner="scanner-1",
            events=[
                PresenceEvent(
                    kind=PresenceKind.ENTER,
                    beacon="ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:42",
                    zone="cosmetics",
                    rssi=-64.0,
                    at=T0,
                )
            ],
        ),
        Command(
            **env,
            seq=1,
            name="resync",
            correlation_id="c0ffee0000000001",
            expires_at=T0 + timedelta(seconds=30),
            args={"reason": "gap on rfid/reader-1"},
        ),
        CommandAck(
            **env,
            seq=2,
            correlation_id="c0ffee0000000001",
            command="resync",
            status=AckStatus.DONE,
        ),
        Committed(
            **env,
            seq=3,
            streams=[CommitMark(stream="rfid/reader-1", seq=41)],
        ),
        Offer(
            store=STORE,
            node="cloud-1",
            event_time=T0,
            sent_time=T0,
            seq=77,
            shopper="tok-5d1e",
            offer_id="offer000000001",
            campaign="winter-lipstick",
            zone="cosmetics",
            trigger=OfferTrigger.DWELL,
            gtins=[GTIN],
            title="20% off lipstick",
            expires_at=T0 + timedelta(hours=1),
        ),
        OrderUpdate(
            store=STORE,
            node="cloud-1",
            event_time=T0,
            sent_time=T0,
            seq=12,
            shopper="tok-5d1e",
            order_id="0f1e2d3c4b5a69788796a5b4c3d2e1f0",
            state="ready_for_pickup",
            bank="bank-1",
            compartment="0-03",
            hold_until=T0 + timedelta(hours=48),
        ),
    ]
