"""The hot-path line builders must write exactly what the reference `points_for` defines."""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from cloud.timeseries import encode, message_lines, points_for
from cloud.timeseries.schema import time_ns
from protocols.messages import (
    Birth,
    BlePresence,
    CompartmentEvent,
    CompartmentFlag,
    CompartmentState,
    CountDelta,
    DeviceKind,
    DriverHealth,
    DriverState,
    Health,
    ItemEvent,
    ItemEventKind,
    LockerEvents,
    Message,
    OutboxHealth,
    PresenceEvent,
    PresenceKind,
    RfidEvents,
    RfidSnapshot,
    ShelfCount,
)
from tests.samples import NODE, STORE, T0, all_samples

# Few distinct values, so events often share a series and a microsecond (the stamping rule).
identifiers = st.sampled_from(["shelf-1", "shelf-2", "a.b_c-3"])
gtins = st.sampled_from(["80614141123458", "00000000000017"])
epcs = st.sampled_from(["30340242201D8C0000000001", "E2801160600002040D9B4A21"])
moments = st.integers(0, 3).map(lambda us: T0 + timedelta(microseconds=us))
floats = st.none() | st.floats(-120, 0, allow_nan=False) | st.just(-40.0)
free_text = st.text(alphabet='ab "\\,= \n\r\t=é', max_size=12)
# The envelope every generated message shares.
envelope = {"store": st.just(STORE), "node": st.just(NODE), "seq": st.integers(0, 10**6)}

item_events = st.builds(
    ItemEvent,
    kind=st.sampled_from(ItemEventKind),
    epc=epcs,
    gtin=st.none() | gtins,
    shelf=st.none() | identifiers,
    from_shelf=st.none() | identifiers,
    at=moments,
    rssi=floats,
)
count_deltas = st.builds(
    CountDelta, shelf=identifiers, gtin=gtins, delta=st.integers(-5, 5), count=st.integers(0, 99)
)
rfid_events = st.builds(
    RfidEvents,
    **envelope,
    reader=identifiers,
    event_time=moments,
    items=st.lists(item_events, max_size=8),
    counts=st.lists(count_deltas, max_size=8),
)
rfid_snapshots = st.builds(
    RfidSnapshot,
    **envelope,
    reader=identifiers,
    event_time=moments,
    shelves=st.lists(
        st.builds(ShelfCount, shelf=identifiers, gtin=gtins, count=st.integers(0, 99)),
        max_size=8,
    ),
)
ble_presence = st.builds(
    BlePresence,
    **envelope,
    scanner=identifiers,
    events=st.lists(
        st.builds(
            PresenceEvent,
            kind=st.sampled_from(PresenceKind),
            beacon=st.sampled_from(["app:tok-1", "ibeacon:f7826da6:1:42", "fixed-7"]),
            zone=identifiers,
            rssi=floats,
            dwell_s=st.none() | st.floats(0, 1e4, allow_nan=False),
            at=moments,
        ),
        max_size=8,
    ),
)
locker_events = st.builds(
    LockerEvents,
    **envelope,
    bank=identifiers,
    events=st.lists(
        st.builds(
            CompartmentEvent,
            compartment=identifiers,
            state=st.sampled_from(CompartmentState),
            previous=st.none() | st.sampled_from(CompartmentState),
            cause=free_text,
            door_open=st.booleans(),
            occupied=st.booleans(),
            flags=st.lists(st.sampled_from(CompartmentFlag), max_size=2),
            order_ref=st.none() | free_text,
            at=moments,
        ),
        max_size=8,
    ),
)

# Metric names and drop reasons are chosen by the edge: some need the key cleaning.
metric_names = st.sampled_from(
    ["reads_per_s", "poll latency", "poll_latency", "a=b,c", "x" * 70, "é"]
)
numbers = st.integers(0, 10**9) | st.floats(0, 1e9, allow_nan=False)
health = st.builds(
    Health,
    **envelope,
    event_time=moments,
    version=free_text,
    bd_seq=st.integers(0, 99),
    uptime_s=numbers,
    cpu_percent=st.floats(0, 400, allow_nan=False),
    rss_bytes=st.integers(0, 10**9),
    disk_free_bytes=st.integers(0, 10**12),
    outbox=st.builds(
        OutboxHealth,
        depth=st.integers(0, 99),
        bytes=st.integers(0, 10**6),
        capacity_bytes=st.integers(0, 10**8),
        oldest_age_s=st.none() | st.floats(0, 1e5, allow_nan=False),
        dropped=st.dictionaries(metric_names, st.integers(0, 99), max_size=3),
    ),
    drivers=st.lists(
        st.builds(
            DriverHealth,
            device=identifiers,
            kind=st.sampled_from(DeviceKind),
            state=st.sampled_from(DriverState),
            events_per_s=numbers,
            restarts=st.integers(0, 9),
            last_error=st.none() | free_text,
            metrics=st.dictionaries(metric_names, st.floats(-1e6, 1e6, allow_nan=False)),
        ),
        max_size=3,
    ),
)


def _reference(message: Message) -> list[str]:
    return [encode(point) for point in points_for(message)]


@settings(max_examples=300, deadline=None)
@given(st.one_of(rfid_events, rfid_snapshots, ble_presence, locker_events, health))
def test_fast_lines_equal_the_reference(message: Message) -> None:
    assert message_lines(message) == _reference(message)


def test_every_sample_message_has_the_same_lines_both_ways() -> None:
    for message in all_samples():
        assert message_lines(message) == _reference(message), message.type


def test_time_ns_is_exact_for_aware_and_naive_moments() -> None:
    moment = datetime(2026, 11, 23, 9, 30, 0, 123456)
    expected = 1_795_426_200_123_456_000
    assert time_ns(moment) == expected
    assert time_ns(moment.replace(tzinfo=T0.tzinfo)) == expected


@settings(max_examples=100, deadline=None)
@given(
    shelves=st.lists(
        st.builds(ShelfCount, shelf=identifiers, gtin=gtins, count=st.integers(0, 99)),
        max_size=8,
    ),
    moment=moments,
)
def test_birth_lines_equal_the_reference(shelves: list[ShelfCount], moment: datetime) -> None:
    sample = next(m for m in all_samples() if isinstance(m, Birth))
    birth = sample.model_copy(update={"shelves": shelves, "event_time": moment})
    lines = message_lines(birth)
    assert lines == _reference(birth)
    # node status first, then one line per shelf count, then compartments and zones
    assert len(lines) == 1 + len(shelves) + 2
