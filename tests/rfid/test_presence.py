"""Presence engine rules, driven by simulated time (no clocks, no sleeping)."""

from __future__ import annotations

import math

import pytest

from edge.rfid.presence import PresenceConfig, PresenceEngine, departure_window
from protocols.messages import ItemEventKind
from simulators.llrp.world import World, WorldConfig, sgtin96

EPC = sgtin96(812345, 6789)
GTIN = "80614141123458"
SHELVES = {1: "shelf-1", 2: "shelf-2", 3: "shelf-3"}


def engine(**overrides: float) -> PresenceEngine:
    return PresenceEngine(SHELVES, PresenceConfig(**overrides))  # type: ignore[arg-type]


def run(e: PresenceEngine, seconds: range, reads: dict[int, list[tuple[int, float]]]) -> None:
    """reads: epoch -> [(antenna, rssi)] for EPC; ticks at every epoch boundary."""
    for second in seconds:
        for antenna, rssi in reads.get(second, []):
            e.observe(EPC, antenna, rssi, second + 0.5)
        e.tick(second + 1.0)


def kinds(e: PresenceEngine) -> list[tuple[ItemEventKind, str | None, str | None]]:
    return [(ev.kind, ev.shelf, ev.from_shelf) for ev in e.drain_events()]


def test_one_read_is_not_an_arrival_two_epochs_are() -> None:
    e = engine()
    run(e, range(10), {0: [(1, -55)], 4: [(1, -55)]})
    assert kinds(e) == []  # reads 4 epochs apart: never 2 within 3 epochs
    run(e, range(10, 13), {10: [(1, -55)], 12: [(1, -55)]})
    assert kinds(e) == []  # detected, settling: announced after settle_epochs
    run(e, range(13, 16), {})
    events = e.drain_events()
    assert [(ev.kind, ev.shelf, ev.gtin) for ev in events] == [
        (ItemEventKind.ARRIVED, "shelf-1", GTIN)
    ]


def test_many_reads_in_one_epoch_are_still_one_epoch() -> None:
    e = engine()
    run(e, range(3), {0: [(1, -55)] * 30})
    assert kinds(e) == []


def test_cross_reads_never_move_an_item() -> None:
    e = engine()
    reads = {s: [(1, -55.0), (2, -66.0)] if s % 3 else [(2, -64.0)] for s in range(120)}
    run(e, range(120), reads)
    assert kinds(e) == [(ItemEventKind.ARRIVED, "shelf-1", None)]
    assert e.items() == {EPC: "shelf-1"}


def test_a_single_stronger_read_elsewhere_does_not_move_it() -> None:
    e = engine()
    run(e, range(10), {s: [(1, -60.0)] for s in range(10)})
    run(e, range(10, 12), {10: [(2, -40.0), (1, -60.0)]})
    assert kinds(e) == [(ItemEventKind.ARRIVED, "shelf-1", None)]


def test_real_move_is_detected_and_counts_follow() -> None:
    e = engine()
    run(e, range(10), {s: [(1, -55.0)] for s in range(10)})
    assert [(c.shelf, c.delta, c.count) for c in e.drain_counts()] == [("shelf-1", 1, 1)]
    run(e, range(10, 20), {s: [(3, -50.0), (2, -62.0)] for s in range(10, 20)})
    assert kinds(e)[-1] == (ItemEventKind.MOVED, "shelf-3", "shelf-1")
    assert [(c.shelf, c.delta, c.count) for c in e.drain_counts()] == [
        ("shelf-1", -1, 0),
        ("shelf-3", 1, 1),
    ]
    assert [(s.shelf, s.count) for s in e.shelf_counts()] == [("shelf-3", 1)]


def test_move_needs_the_offset_to_decay() -> None:
    # read on antenna 2 at +3 dB better, while antenna 1 keeps reading it: within the 6 dB
    # hysteresis, so it stays; when antenna 1 goes quiet the offset decays and it moves
    e = engine()
    run(e, range(5), {s: [(1, -55.0)] for s in range(5)})
    run(e, range(5, 15), {s: [(1, -55.0), (2, -52.0)] for s in range(5, 15)})
    assert e.items() == {EPC: "shelf-1"}
    run(e, range(15, 18), {s: [(2, -52.0)] for s in range(15, 18)})
    assert e.items() == {EPC: "shelf-2"}


@pytest.mark.parametrize(
    ("p_hat", "window"), [(0.7, 10), (1.0, 7), (0.5, 14), (0.05, 60), (5.0, 5)]
)
def test_departure_window_formula(p_hat: float, window: int) -> None:
    assert departure_window(p_hat, PresenceConfig()) == window


def test_departure_after_w_epochs_from_own_read_rate() -> None:
    # read every epoch for 100 s: p_hat ~ 1, W = 7 -> departs after 7 missed epochs, not 6
    e = engine()
    run(e, range(100), {s: [(1, -55.0)] for s in range(100)})
    e.drain_events()
    run(e, range(100, 106), {})
    assert kinds(e) == []
    run(e, range(106, 108), {})
    assert kinds(e) == [(ItemEventKind.DEPARTED, None, "shelf-1")]


def test_a_weak_tag_gets_a_longer_window() -> None:
    e = engine()
    run(e, range(200), {s: [(1, -70.0)] for s in range(0, 200, 2)})  # p_hat ~ 1/2 -> W = 14
    e.drain_events()
    run(e, range(200, 210), {})  # 11 missed epochs since the last read (198): a strong
    assert kinds(e) == []  # tag (W = 7) would have departed by now
    run(e, range(210, 225), {})
    assert kinds(e) == [(ItemEventKind.DEPARTED, None, "shelf-1")]


def test_left_store_after_600_s_unseen_then_forgotten() -> None:
    e = engine()
    run(e, range(20), {s: [(1, -55.0)] for s in range(20)})
    run(e, range(20, 605), {})
    assert kinds(e)[-1] == (ItemEventKind.DEPARTED, None, "shelf-1")
    run(e, range(605, 625), {})
    assert kinds(e) == [(ItemEventKind.LEFT_STORE, None, None)]
    assert e.tracked == 0


def _stocked(n: int = 5) -> tuple[PresenceEngine, list[str]]:
    e = engine()
    epcs = [sgtin96(812345, i) for i in range(n)]
    for s in range(20):
        for epc in epcs:
            e.observe(epc, 1, -55.0, s + 0.5)
        e.observe(sgtin96(1, 1), 2, -55.0, s + 0.5)
        e.tick(s + 1.0)
    e.drain_events()
    return e, epcs


def test_reader_outage_does_not_make_items_disappear() -> None:
    e, epcs = _stocked()
    e.set_reader_up(False, 20.0)
    for s in range(20, 200):
        e.tick(s + 1.0)
    e.set_reader_up(True, 200.0)
    for s in range(200, 205):  # back, reading again
        for epc in epcs:
            e.observe(epc, 1, -55.0, s + 0.5)
        e.tick(s + 1.0)
    assert e.drain_events() == []
    assert len(e.items()) == 6


def test_antenna_event_freezes_only_that_antenna() -> None:
    e, _ = _stocked()
    e.set_antenna_up(1, False, 20.0)
    for s in range(20, 100):
        e.tick(s + 1.0)  # nothing read anywhere: antenna 2's lone item departs
    assert kinds(e) == [(ItemEventKind.DEPARTED, None, "shelf-2")]
    e.set_antenna_up(1, True, 100.0)
    for s in range(100, 105):
        e.tick(s + 1.0)
    assert kinds(e) == []  # the departure window restarted when the antenna came back
    for s in range(105, 120):
        e.tick(s + 1.0)
    assert {k for k, _, _ in kinds(e)} == {ItemEventKind.DEPARTED}  # really gone now


def test_whole_shelf_silent_at_once_is_an_outage_but_one_item_leaving_is_not() -> None:
    e, epcs = _stocked()
    for s in range(20, 50):  # shelf 1 silent without any antenna event; shelf 2 reads on
        e.observe(sgtin96(1, 1), 2, -55.0, s + 0.5)
        e.tick(s + 1.0)
    assert kinds(e) == []
    for s in range(50, 80):  # shelf 1 back, but one item is gone
        for epc in epcs[1:]:
            e.observe(epc, 1, -55.0, s + 0.5)
        e.observe(sgtin96(1, 1), 2, -55.0, s + 0.5)
        e.tick(s + 1.0)
    events = e.drain_events()
    assert [(ev.kind, ev.epc) for ev in events] == [(ItemEventKind.DEPARTED, epcs[0])]


def test_silent_shelf_freeze_is_bounded() -> None:
    e, _ = _stocked()
    for s in range(20, 120):
        e.observe(sgtin96(1, 1), 2, -55.0, s + 0.5)
        e.tick(s + 1.0)
    assert len([ev for ev in e.drain_events() if ev.kind is ItemEventKind.DEPARTED]) == 5


def test_unmapped_antenna_and_raw_epcs() -> None:
    e = engine()
    for s in range(5):
        e.observe(EPC, 9, -50.0, s + 0.5)
        e.observe("E2801160600002084A6B1C35", 1, -50.0, s + 0.5)
        e.tick(s + 1.0)
    assert e.unmapped_reads == 5
    events = e.drain_events()
    assert [(ev.epc, ev.gtin) for ev in events] == [("E2801160600002084A6B1C35", None)]
    assert e.drain_counts() == []  # no GTIN, no count


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="delta"):
        PresenceConfig(delta=2)
    with pytest.raises(ValueError, match="empty"):
        PresenceEngine({})


def test_accuracy_against_simulated_world_with_churn() -> None:
    world = World(WorldConfig(antennas=4, items_per_shelf=30, read_rate=0.7, seed=7))
    e = PresenceEngine(world.shelves())
    for second in range(1, 241):
        if second % 20 == 0 and second <= 180:
            world.churn(float(second), removes=2, adds=2, moves=2)
        for r in world.cycle(float(second)):
            e.observe(r.epc, r.antenna, float(r.rssi), second - 0.5)
        e.tick(float(second))
    truth = world.truth()
    got = e.items()
    correct = sum(1 for epc, shelf in truth.items() if got.get(epc) == shelf)
    phantoms = len(set(got) - set(truth))
    accuracy = correct / len(truth) if not phantoms else (correct - phantoms) / len(truth)
    assert accuracy >= 0.995, (accuracy, correct, len(truth), phantoms)
    counts = {(c.shelf, c.gtin): c.count for c in e.shelf_counts()}
    assert sum(counts.values()) == len(got)
    assert not math.isnan(accuracy)


def test_arrival_from_cross_reads_is_corrected_while_settling_not_moved() -> None:
    e = engine()
    # the neighbour's cross-reads arrive first (its own antenna missed two cycles) ...
    run(e, range(3), {0: [(2, -67.0)], 1: [(2, -66.0)], 2: [(1, -53.0)]})
    run(e, range(3, 6), {3: [(1, -54.0)], 4: [(1, -55.0)]})
    # ... but one strong read on its own antenna while settling puts it right: no move
    assert kinds(e) == [(ItemEventKind.ARRIVED, "shelf-1", None)]
    assert [(c.shelf, c.delta) for c in e.drain_counts()] == [("shelf-1", 1)]


def test_a_cross_read_right_after_a_long_outage_does_not_move_an_item() -> None:
    e = engine()
    run(e, range(10), {s: [(1, -55.0), (2, -65.0)] for s in range(10)})
    assert kinds(e) == [(ItemEventKind.ARRIVED, "shelf-1", None)]
    e.set_reader_up(False, 10.0)
    run(e, range(10, 30), {})  # 20 s down: longer than stale_antenna_s
    e.set_reader_up(True, 30.0)
    # the neighbour happens to report first, twice, a little stronger than before
    run(e, range(30, 32), {30: [(2, -60.0)], 31: [(2, -60.0)]})
    run(e, range(32, 40), {s: [(1, -55.0), (2, -65.0)] for s in range(32, 40)})
    assert kinds(e) == []
    assert e.items() == {EPC: "shelf-1"}


def _first_departure_missed(e: PresenceEngine, last_read_epoch: int) -> int:
    """Tick one epoch at a time after the last read; the number of whole epochs missed
    (epochs after the last read that have ended) at the tick that reported the departure."""
    for epoch in range(last_read_epoch + 1, last_read_epoch + 200):
        e.tick(float(epoch))
        if any(ev.kind is ItemEventKind.DEPARTED for ev in e.drain_events()):
            return epoch - 1 - last_read_epoch
    raise AssertionError("never departed")


@pytest.mark.parametrize(
    ("every", "overrides", "window"),
    [
        # read every epoch for 100: p_hat = (100 + 0.7*3) / (100 + 3) = 0.991 -> W = 7
        (1, {}, 7),
        # every 2nd epoch: p_hat = (50 + 2.1) / (99 + 3) = 0.511 -> ceil(6.908 / 0.511) = 14
        (2, {}, 14),
        # delta 0.1: ceil(2.303 / 0.991) = 3, clamped up to min_window 5
        (1, {"delta": 0.1}, 5),
        # epochs 0, 1 (the arrival), then every 10th: p_hat = (11 + 2.1) / (91 + 3) = 0.139
        # -> W = 50; max_window 40 caps it
        (10, {"max_window": 40}, 40),
    ],
)
def test_departure_fires_at_exactly_w_missed_epochs(
    every: int, overrides: dict[str, float], window: int
) -> None:
    """Not one epoch early, not one late: W missed epochs are the departure (`>=`)."""
    e = engine(**overrides)
    last = 0
    for second in range(100):
        if second % every == 0 or second == 1:
            e.observe(EPC, 1, -55.0, second + 0.5)
            last = second
        e.tick(second + 1.0)
    assert [k for k, _, _ in kinds(e)] == [ItemEventKind.ARRIVED]
    assert _first_departure_missed(e, last) == window


def test_wall_clock_time_at_quarter_second_epochs_fits_the_32_bit_columns() -> None:
    """Epochs are counted from the engine's first: 2026's Unix time at 0.25 s epochs is
    about 7e9 epochs, past what the 32-bit epoch columns hold, yet the rules are the same
    as from time 0 (arrival, then departure at exactly W missed epochs)."""
    start = 1_780_000_000.0  # 2026
    e = engine(epoch_s=0.25)
    for epoch in range(100):
        e.observe(EPC, 1, -55.0, start + epoch * 0.25 + 0.1)
        e.tick(start + (epoch + 1) * 0.25)
    assert [k for k, _, _ in kinds(e)] == [ItemEventKind.ARRIVED]
    for epoch in range(100, 300):
        e.tick(start + (epoch + 1) * 0.25)
        if any(ev.kind is ItemEventKind.DEPARTED for ev in e.drain_events()):
            break
    # read in each of 100 epochs: W = 7, as in test_departure_after_w_epochs_from_own_read_rate
    assert epoch - 99 == 7


def test_counts_kept_in_16_bit_columns_are_bounded_in_the_config() -> None:
    PresenceConfig(rssi_window=10_000, arrival_epochs=1_000)
    with pytest.raises(ValueError, match="rssi_window"):
        PresenceConfig(rssi_window=10_001)
    with pytest.raises(ValueError, match="arrival_epochs"):
        PresenceConfig(arrival_epochs=1_001)
