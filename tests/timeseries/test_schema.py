from __future__ import annotations

from datetime import timedelta

from cloud.timeseries import MEASUREMENTS, lines_for, parse, points_for
from cloud.timeseries.schema import ITEM_EVENT, SHELF_COUNT, time_ns
from protocols.messages import (
    BlePresence,
    ItemEvent,
    ItemEventKind,
    PresenceEvent,
    PresenceKind,
    RfidEvents,
)
from tests.samples import EPC, GTIN, NODE, STORE, T0, all_samples

# What each sample message must contribute (measurement -> number of points).
EXPECTED = {
    "status": {"node_status": 1},
    "birth": {"node_status": 1, "shelf_count": 1, "locker_compartment": 1, "zone_occupancy": 1},
    "death": {"node_status": 1},
    "health": {"node_health": 1, "driver_health": 1},
    "rfid.events": {"item_event": 2, "shelf_count": 1},
    "rfid.snapshot": {"shelf_count": 1},
    "locker.events": {"locker_event": 2},
    "locker.snapshot": {"locker_compartment": 1},
    "ble.presence": {"presence_event": 1},
    "command": {"command": 1},
    "ack": {"command_ack": 1},
    "offer": {"offer": 1},
    "order.update": {},  # cloud -> shopper notification: the order history is in the state store
    "committed": {},  # cloud -> edge delivery bookkeeping, not history
}


def test_every_message_type_maps_to_its_measurements() -> None:
    samples = all_samples()
    assert {m.type for m in samples} == set(EXPECTED)
    for message in samples:
        counts: dict[str, int] = {}
        for point in points_for(message):
            assert point.measurement in MEASUREMENTS
            counts[point.measurement] = counts.get(point.measurement, 0) + 1
            assert point.tags["store"] == STORE
        assert counts == EXPECTED[message.type], message.type


def test_every_line_parses_back_to_its_point() -> None:
    for message in all_samples():
        for point in points_for(message):
            assert parse(point.to_line()) == point


def test_high_cardinality_values_are_fields_never_tags() -> None:
    private = {EPC, "E2801160600002040D9B4A21", "ord-1001", "c0ffee0000000001", "tok-5d1e"}
    private.add("ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:42")
    seen_in_fields = set()
    for message in all_samples():
        for point in points_for(message):
            assert not private & set(point.tags.values()), point
            seen_in_fields |= private & {str(v) for v in point.fields.values()}
    # EPCs, order refs and correlation ids are kept, as fields; neither the shopper token nor
    # a beacon id (which may identify a person who never opted in) is stored.
    beacon = "ibeacon:f7826da6-4fa2-4e98-8024-bc5b71e0893e:1:42"
    assert seen_in_fields == private - {"tok-5d1e", beacon}


def test_points_are_deterministic_so_redelivery_overwrites() -> None:
    first = lines_for(all_samples())
    again = lines_for(all_samples())
    assert first == again


def test_shelf_counts_carry_count_and_delta() -> None:
    message = next(m for m in all_samples() if isinstance(m, RfidEvents))
    counts = [p for p in points_for(message) if p.measurement == SHELF_COUNT]
    assert counts[0].tags == {"store": STORE, "shelf": "aisle3-shelf2", "gtin": GTIN}
    assert counts[0].fields == {"count": 13, "delta": 1}
    assert counts[0].time_ns == time_ns(T0)


def test_events_sharing_a_series_and_microsecond_get_distinct_timestamps() -> None:
    items = [
        ItemEvent(kind=ItemEventKind.DEPARTED, epc=f"{i:024X}", shelf="s1", at=T0)
        for i in range(1, 2_501)
    ]
    message = RfidEvents(store=STORE, node=NODE, seq=999, reader="r1", items=items, event_time=T0)
    points = [p for p in points_for(message) if p.measurement == ITEM_EVENT]
    keys = {(tuple(sorted(p.tags.items())), p.time_ns) for p in points}
    assert len(keys) == len(items)
    assert min(p.time_ns for p in points) >= time_ns(T0)
    # A redelivered message yields the very same timestamps.
    assert [p.time_ns for p in points] == [
        p.time_ns for p in points_for(message) if p.measurement == ITEM_EVENT
    ]


def test_events_in_other_microseconds_keep_their_own_time() -> None:
    events = [
        PresenceEvent(
            kind=PresenceKind.ENTER, beacon=f"app:{i}", zone="z", at=T0 + timedelta(seconds=i)
        )
        for i in range(3)
    ]
    message = BlePresence(store=STORE, node=NODE, seq=2_000, scanner="s", events=events)
    stamps = [p.time_ns for p in points_for(message)]
    assert stamps == [time_ns(T0 + timedelta(seconds=i)) for i in range(3)]


def test_same_microsecond_events_of_different_messages_start_at_different_offsets() -> None:
    # The stamping rule (module docstring): event j of a group gets (seq + j) mod 1000 ns.
    def stamps(seq: int) -> list[int]:
        events = [
            PresenceEvent(kind=PresenceKind.ENTER, beacon=f"app:{i}", zone="z", at=T0)
            for i in range(2)
        ]
        message = BlePresence(store=STORE, node=NODE, seq=seq, scanner="s", events=events)
        return [p.time_ns for p in points_for(message)]

    base = time_ns(T0)
    assert stamps(7) == [base + 7, base + 8]
    assert stamps(999) == [base + 999, base]  # wraps inside the microsecond
