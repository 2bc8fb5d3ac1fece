"""The presence engine learns read rates online: per antenna (the prior of a new tag), per
tag (its own rate), and the fades a tag came back from; engines of one node share claims.
Simulated time, seeded randomness: no clocks."""

from __future__ import annotations

import random

from edge.config import EdgeSettings, create_drivers
from edge.rfid.presence import PresenceConfig, PresenceEngine
from edge.rfid.shelf_reader import ShelfReaderDriver
from protocols.messages import ItemEventKind
from simulators.llrp.world import sgtin96

SHELVES = {1: "shelf-1", 2: "shelf-2"}


def epcs(n: int, first: int = 1) -> list[str]:
    return [sgtin96(812345, serial) for serial in range(first, first + n)]


def feed(
    e: PresenceEngine, seconds: range, rates: dict[str, float], rng: random.Random, antenna: int = 1
) -> None:
    """Each tag read in an epoch with its rate, on `antenna`; a tick at every boundary."""
    for second in seconds:
        for epc, rate in rates.items():
            if rng.random() < rate:
                e.observe(epc, antenna, -55.0, second + 0.5)
        e.tick(second + 1.0)


def departed(e: PresenceEngine) -> list[str]:
    return [ev.epc for ev in e.drain_events() if ev.kind is ItemEventKind.DEPARTED]


def test_a_weak_tags_rate_is_learned_and_a_5_s_fade_does_not_depart_it() -> None:
    rng = random.Random(4)
    weak, *others = epcs(40)
    rates = {weak: 0.3, **dict.fromkeys(others, 0.3)}
    e = PresenceEngine(SHELVES)
    feed(e, range(300), rates, rng)
    assert weak in e.items()
    estimate = e.read_rate(weak)
    assert estimate is not None
    assert abs(estimate - 0.3) < 0.08
    # the antenna learned what its tags do, from a prior that knew nothing (0.5)
    assert abs(e.antenna_read_rate(1) - 0.3) < 0.06
    e.drain_events()  # at 0.3 a few of 40 tags miss 23 epochs in a row in 300 s (delta)
    # a 5 s fade: the weak tag unread for 5 epochs while the others read on
    feed(e, range(300, 305), dict.fromkeys(others, 0.3), rng)
    feed(e, range(305, 310), rates, rng)
    assert weak in e.items()
    assert weak not in departed(e)


def test_a_removed_weak_tag_departs_within_its_window() -> None:
    rng = random.Random(5)
    weak, *others = epcs(20)
    e = PresenceEngine(SHELVES)
    feed(e, range(200), {weak: 0.3, **dict.fromkeys(others, 0.9)}, rng)
    e.drain_events()
    # taken: no read from second 200 on; W = ceil(ln(1000) / ~0.3) = 21..26 epochs
    gone_at = None
    for second in range(200, 260):
        feed(e, range(second, second + 1), dict.fromkeys(others, 0.9), rng)
        if weak in departed(e):
            gone_at = second
            break
    assert gone_at is not None
    assert 215 <= gone_at <= 232


def _missed_before_departure(fade: int, **overrides: float) -> int:
    """Read every epoch of 60 except a fade of `fade` epochs from 50; then unread. How many
    missed epochs until it departs."""
    (tag,) = epcs(1)
    e = PresenceEngine(SHELVES, PresenceConfig(**overrides))  # type: ignore[arg-type]
    for second in range(60):
        if not 50 <= second < 50 + fade:
            e.observe(tag, 1, -55.0, second + 0.5)
        e.tick(second + 1.0)
    assert [ev.kind for ev in e.drain_events()] == [ItemEventKind.ARRIVED]  # fade survived
    for second in range(60, 200):
        e.tick(second + 1.0)
        if tag not in e.items():
            return second - 59
    raise AssertionError("never departed")


def test_a_tag_that_came_back_from_a_fade_gets_room_for_the_next_one() -> None:
    """p_hat ~ 0.9 gives W = 8; the 6-epoch fade it came back from (4 reads ago) gives
    ceil(1.5 * 6 * 0.99**3) = 9: one epoch more, exactly."""
    assert _missed_before_departure(6) == 9
    assert _missed_before_departure(6, gap_margin=0.0) == 8
    assert _missed_before_departure(0) == 7  # no fade: the read rate alone (p_hat ~ 1)


def test_a_new_tag_takes_its_antennas_learned_rate_as_prior() -> None:
    """Two antennas, one reading its tags reliably, one at 0.3: a tag read in two epochs
    and then never again waits longer on the weak antenna (its prior is the antenna's)."""
    rng = random.Random(6)
    strong_shelf, weak_shelf = epcs(30), epcs(30, 100)
    e = PresenceEngine(SHELVES)
    for second in range(200):
        for epc in strong_shelf:
            if rng.random() < 0.95:
                e.observe(epc, 1, -55.0, second + 0.5)
        for epc in weak_shelf:
            if rng.random() < 0.3:
                e.observe(epc, 2, -55.0, second + 0.5)
        e.tick(second + 1.0)
    assert e.antenna_read_rate(1) > 0.85
    assert e.antenna_read_rate(2) < 0.4
    new_strong, new_weak = epcs(2, 500)
    windows = {}
    for new, antenna in ((new_strong, 1), (new_weak, 2)):
        for second in (200, 201):
            e.observe(new, antenna, -55.0, second + 0.5)
    for second in range(200, 260):
        for epc in strong_shelf:
            e.observe(epc, 1, -55.0, second + 0.5)
        for epc in weak_shelf:
            e.observe(epc, 2, -55.0, second + 0.5)
        e.tick(second + 1.0)
        for epc in departed(e):
            windows[epc] = second - 201
    # p_hat = (2 + 3 * rate) / 5: ~0.97 -> W 8; ~0.58 -> W 12 (+ the rate drifting up)
    assert windows[new_strong] < windows[new_weak]


def test_a_neighbouring_reader_does_not_make_an_item_arrive_twice() -> None:
    claims: dict[bytes, PresenceEngine] = {}
    a = PresenceEngine({1: "a-1"})
    b = PresenceEngine({1: "b-1"})
    a.claims = b.claims = claims
    (tag,) = epcs(1)
    for second in range(30):
        a.observe(tag, 1, -50.0, second + 0.5)
        b.observe(tag, 1, -62.0, second + 0.5)  # cross-reads, 12 dB weaker, every epoch
        a.tick(second + 1.0)
        b.tick(second + 1.0)
    assert tag in a.items()
    assert tag not in b.items()
    assert b.refused_claims > 0
    # carried to b's fixture: a stops reading it, b hears it loud
    for second in range(30, 45):
        b.observe(tag, 1, -45.0, second + 0.5)
        a.tick(second + 1.0)
        b.tick(second + 1.0)
    assert tag in b.items()
    assert tag not in a.items()
    assert tag in departed(a)
    assert claims[bytes.fromhex(tag)] is b


def test_a_reader_that_is_down_keeps_its_items_from_a_neighbour() -> None:
    claims: dict[bytes, PresenceEngine] = {}
    a = PresenceEngine({1: "a-1"})
    b = PresenceEngine({1: "b-1"})
    a.claims = b.claims = claims
    (tag,) = epcs(1)
    for second in range(10):
        a.observe(tag, 1, -50.0, second + 0.5)
        a.tick(second + 1.0)
    a.set_reader_up(False, 10.0)
    for second in range(10, 40):
        b.observe(tag, 1, -40.0, second + 0.5)
        b.tick(second + 1.0)
    assert tag in a.items()
    assert tag not in b.items()


def test_online_learning_options_are_validated() -> None:
    for bad in ({"prior_rate": 0.0}, {"rate_alpha": 1.5}, {"gap_decay": 2.0}):
        try:
            PresenceConfig(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{bad} was accepted")


def test_a_nodes_shelf_readers_share_one_claim_table() -> None:
    settings = EdgeSettings.model_validate(
        {
            "store": "store-1",
            "node": "pi-1",
            "devices": [
                {
                    "id": f"reader-{n}",
                    "kind": "rfid_reader",
                    "driver": "llrp",
                    "options": {"antennas": {1: f"r{n}-a1"}},
                }
                for n in (1, 2)
            ],
        }
    )
    drivers = list(create_drivers(settings).values())
    engines = [d.engine for d in drivers if isinstance(d, ShelfReaderDriver)]
    assert len(engines) == 2
    assert engines[0].claims is not None
    assert engines[0].claims is engines[1].claims
