"""Zone presence rules, driven with explicit timestamps (deterministic)."""

from __future__ import annotations

import pytest

from edge.ble.presence import PresenceEngine, PresenceParams
from protocols.messages import PresenceEvent, PresenceKind
from simulators.ble.world import (
    FloorPlan,
    RadioModel,
    SimScanner,
    StoreSimulation,
    Walk,
    Waypoint,
    Zone,
)

T0 = 1_780_000_000.0
BEACON = "app:00010002"


def kinds(events: list[PresenceEvent]) -> list[tuple[PresenceKind, str]]:
    return [(e.kind, e.zone) for e in events]


def feed(
    engine: PresenceEngine, scanner: str, rssis: list[float], start: float, gap: float = 0.5
) -> float:
    t = start
    for rssi in rssis:
        engine.observe(BEACON, scanner, rssi, t)
        t += gap
    return t - gap


@pytest.fixture
def engine() -> PresenceEngine:
    return PresenceEngine({"hci0": "shelf-a", "hci1": "shelf-b"})


def test_enter_needs_three_samples_at_or_above_minus_70(engine: PresenceEngine) -> None:
    feed(engine, "hci0", [-60, -60], T0)
    assert engine.drain() == []
    feed(engine, "hci0", [-60], T0 + 1)
    events = engine.drain()
    assert kinds(events) == [(PresenceKind.ENTER, "shelf-a")]
    assert events[0].beacon == BEACON
    assert engine.zone_of_beacon(BEACON) == "shelf-a"


def test_rssi_is_smoothed_with_alpha_0_3(engine: PresenceEngine) -> None:
    # -50, then -80 twice: -50 -> -59 -> -65.3; all >= -70, so it enters at -65.3
    feed(engine, "hci0", [-50, -80, -80], T0)
    [event] = engine.drain()
    assert event.rssi == pytest.approx(-65.3)
    # one more -80 takes the average to -69.71: still in; a raw -80 alone would not exit
    feed(engine, "hci0", [-80], T0 + 2)
    assert engine.drain() == []


def test_enter_after_five_seconds_with_fewer_samples(engine: PresenceEngine) -> None:
    engine.observe(BEACON, "hci0", -65, T0)
    engine.observe(BEACON, "hci0", -65, T0 + 4.9)
    assert engine.drain() == []
    engine.observe(BEACON, "hci0", -65, T0 + 10)  # a new run: the gap broke nothing, 10 s >= 5 s
    assert kinds(engine.drain()) == [(PresenceKind.ENTER, "shelf-a")]


def test_weak_signal_never_enters(engine: PresenceEngine) -> None:
    feed(engine, "hci0", [-72] * 40, T0)
    engine.tick(T0 + 20)
    assert engine.drain() == []


def test_switch_needs_six_db_more(engine: PresenceEngine) -> None:
    t = feed(engine, "hci0", [-65] * 5, T0)
    assert kinds(engine.drain()) == [(PresenceKind.ENTER, "shelf-a")]
    # shelf-b is 4 dB stronger: stays in shelf-a, however long
    for _i in range(20):
        t += 0.5
        engine.observe(BEACON, "hci0", -65, t)
        engine.observe(BEACON, "hci1", -61, t + 0.1)
    assert engine.drain() == []
    # now 7 dB stronger: one clean switch, exit before enter
    for _i in range(20):
        t += 0.5
        engine.observe(BEACON, "hci0", -65, t)
        engine.observe(BEACON, "hci1", -58, t + 0.1)
    events = engine.drain()
    assert kinds(events) == [(PresenceKind.EXIT, "shelf-a"), (PresenceKind.ENTER, "shelf-b")]
    assert events[0].at == events[1].at
    assert engine.zone_of_beacon(BEACON) == "shelf-b"


def test_exit_below_minus_78_with_hysteresis(engine: PresenceEngine) -> None:
    t = feed(engine, "hci0", [-60] * 3, T0)
    engine.drain()
    # -75 is below the enter threshold but above the exit one: stays
    t = feed(engine, "hci0", [-75] * 30, t + 0.5)
    assert engine.drain() == []
    # smoothed falls -75 -> -78.5 (below -78) on the second -83 sample
    feed(engine, "hci0", [-83, -83], t + 0.5)
    events = engine.drain()
    assert kinds(events) == [(PresenceKind.EXIT, "shelf-a")]
    assert events[0].rssi is not None
    assert events[0].rssi < -78


def test_exit_when_unseen_for_30_s(engine: PresenceEngine) -> None:
    last = feed(engine, "hci0", [-60] * 3, T0)
    engine.drain()
    engine.tick(last + 29.9)
    assert engine.drain() == []
    engine.tick(last + 30.1)
    assert kinds(engine.drain()) == [(PresenceKind.EXIT, "shelf-a")]


def test_unseen_timeout_follows_a_slow_beacons_gap(engine: PresenceEngine) -> None:
    # a beacon that advertises every 15 s: timeout max(30, 3 x 15) = 45 s
    last = feed(engine, "hci0", [-60] * 3, T0, gap=15)
    assert kinds(engine.drain()) == [(PresenceKind.ENTER, "shelf-a")]
    engine.tick(last + 40)
    assert engine.drain() == []
    engine.tick(last + 46)
    assert kinds(engine.drain()) == [(PresenceKind.EXIT, "shelf-a")]


def test_one_dwell_after_20_s(engine: PresenceEngine) -> None:
    entered = feed(engine, "hci0", [-60] * 3, T0)
    engine.drain()
    t = feed(engine, "hci0", [-60] * 38, entered + 0.5)  # 19 s more
    engine.tick(t)
    assert engine.drain() == []
    feed(engine, "hci0", [-60] * 10, t + 0.5)
    engine.tick(t + 30)
    events = engine.drain()
    assert kinds(events) == [(PresenceKind.DWELL, "shelf-a")]
    assert events[0].dwell_s is not None
    assert events[0].dwell_s >= 20


def test_retention_forgets_everything_about_a_beacon() -> None:
    engine = PresenceEngine({"hci0": "a"}, PresenceParams(unseen_min_s=5, retention_s=60))
    last = feed(engine, "hci0", [-60] * 3, T0)
    engine.tick(last + 6)
    assert kinds(engine.drain()) == [(PresenceKind.ENTER, "a"), (PresenceKind.EXIT, "a")]
    engine.tick(last + 59)
    assert engine.knows(BEACON)
    engine.tick(last + 60)
    assert not engine.knows(BEACON)
    assert engine.tracked == 0
    assert engine.forgotten == 1
    assert engine.occupancy()[0].beacons == []


def test_retention_applies_even_while_in_a_zone() -> None:
    # a beacon whose gap makes its unseen timeout longer than retention still goes
    engine = PresenceEngine(
        {"hci0": "a"}, PresenceParams(unseen_min_s=5, unseen_gap_factor=20, retention_s=40)
    )
    last = feed(engine, "hci0", [-60] * 3, T0, gap=4)  # timeout 20 x 4 = 80 s > 40 s
    engine.tick(last + 39)
    assert [e.kind for e in engine.drain()] == [PresenceKind.ENTER]
    engine.tick(last + 40)
    assert [e.kind for e in engine.drain()] == [PresenceKind.EXIT]
    assert not engine.knows(BEACON)


def test_occupancy_lists_every_zone(engine: PresenceEngine) -> None:
    feed(engine, "hci1", [-60] * 3, T0)
    occupancy = {z.zone: z.beacons for z in engine.occupancy()}
    assert occupancy == {"shelf-a": [], "shelf-b": [BEACON]}


def test_bounded_number_of_beacons() -> None:
    engine = PresenceEngine({"hci0": "a"}, PresenceParams(max_beacons=2))
    for i in range(5):
        engine.observe(f"app:{i:08x}", "hci0", -60, T0)
    assert engine.tracked == 2
    assert engine.dropped_over_capacity == 3


def test_unknown_scanner_is_counted() -> None:
    engine = PresenceEngine({"hci0": "a"})
    engine.observe(BEACON, "hci9", -50, T0)
    assert engine.dropped_unknown_scanner == 1
    assert not engine.knows(BEACON)


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        PresenceParams(enter_dbm=-80, exit_dbm=-70)
    with pytest.raises(ValueError, match="retention"):
        PresenceParams(retention_s=10)


@pytest.mark.parametrize("seed", range(8))
def test_walking_past_a_shelf_gives_one_enter_and_one_exit(seed: int) -> None:
    """A shopper walks along an aisle, 1 m from the shelf scanner, without stopping."""
    plan = FloorPlan(zones=(Zone("shelf", 0, 0),), scanners=(SimScanner("hci0", "shelf", 0, 0),))
    sim = StoreSimulation(plan, seed=seed, radio=RadioModel(noise_db=4.0, drop_p=0.2))
    sim.add_phone("walker", Walk(sim.start, [Waypoint(-25, 1), Waypoint(25, 1)], speed_mps=1.0))
    engine = PresenceEngine({"hci0": "shelf"})
    phone = sim.phones[0]
    events: list[PresenceEvent] = []

    def deliver(adapter: str, _device: object, adv: object) -> None:
        from bleak.backends.scanner import AdvertisementData

        assert isinstance(adv, AdvertisementData)
        beacon = phone.beacon_id(sim.now)
        assert beacon is not None
        engine.observe(beacon, adapter, adv.rssi, sim.now)

    t = sim.start
    while t < sim.end + 60:
        t += 1
        sim.run_until(t, deliver)
        engine.tick(t)
        events += engine.drain()
    assert [e.kind for e in events] == [PresenceKind.ENTER, PresenceKind.EXIT]
