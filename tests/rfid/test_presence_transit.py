"""A tag seen leaving its shelf is "in transit": its own antenna went quiet while another
reads it louder. It stays counted on its shelf until it settles elsewhere (as an arrival
does), and departs after `transit_window` silent epochs; a tag silent in place (a fade) keeps
its read-rate window. Simulated time, no clocks."""

from __future__ import annotations

import pytest

from edge.rfid.presence import PresenceConfig, PresenceEngine, departure_window
from protocols.messages import ItemEventKind
from simulators.llrp.world import sgtin96

EPC = sgtin96(812345, 4242)
SHELVES = {1: "shelf-1", 2: "shelf-2", 3: "shelf-3"}
HOME_RSSI = -55.0


def engine(**overrides: float) -> PresenceEngine:
    return PresenceEngine(SHELVES, PresenceConfig(**overrides))  # type: ignore[arg-type]


def feed(e: PresenceEngine, epoch: int, reads: list[tuple[int, float]]) -> None:
    """The reads of EPC in one epoch, then the tick at its end."""
    for antenna, rssi in reads:
        e.observe(EPC, antenna, rssi, epoch + 0.5)
    e.tick(epoch + 1.0)


def on_shelf(e: PresenceEngine, epochs: int = 30, every: int = 1) -> None:
    """Read by antenna 1 every `every` epochs for `epochs` (>= rssi_window reads at 1): a
    tag with a settled place."""
    for epoch in range(epochs):
        feed(e, epoch, [(1, HOME_RSSI)] if epoch % every == 0 else [])
    assert [ev.kind for ev in e.drain_events()] == [ItemEventKind.ARRIVED]


def missed_until_departure(e: PresenceEngine, last_read_epoch: int) -> int:
    """Tick on without reads: how many missed epochs since the last read it departs at."""
    for epoch in range(last_read_epoch + 1, last_read_epoch + 100):
        e.tick(epoch + 1.0)
        kinds = [ev.kind for ev in e.drain_events()]
        if ItemEventKind.DEPARTED in kinds:
            return epoch - last_read_epoch
        assert kinds == []
    raise AssertionError("never departed")


def test_a_carried_tag_is_in_transit_not_moved_and_departs_after_the_transit_window() -> None:
    e = engine()
    on_shelf(e)
    # picked up: antenna 1 silent, antenna 2 reads it louder in two epochs
    feed(e, 30, [(2, -49.0)])
    feed(e, 31, [(2, -49.0)])
    assert e.drain_events() == []  # no move: one antenna on a walk is no new shelf
    assert e.items() == {EPC: "shelf-1"}  # still counted where it was, until it settles
    assert missed_until_departure(e, 31) == 5  # not one epoch early (>=), not W = 7


def test_transit_window_is_a_setting_exact_and_never_longer_than_the_normal_one() -> None:
    """Read every epoch, the tag's own window is 7; in transit it is min(transit_window, 7),
    below min_window too."""
    for transit_window, missed in ((4, 4), (6, 6), (9, 7)):
        e = engine(transit_window=transit_window)
        on_shelf(e)
        feed(e, 30, [(2, -49.0)])
        feed(e, 31, [(2, -49.0)])
        assert missed_until_departure(e, 31) == missed


def test_in_transit_it_settles_on_the_new_antenna_after_exactly_settle_epochs() -> None:
    e = engine()
    on_shelf(e)
    feed(e, 30, [(2, -49.0)])
    feed(e, 31, [(2, -49.0)])  # in transit toward antenna 2 from here
    feed(e, 32, [(2, -49.0)])  # one epoch there: not settled
    assert e.drain_events() == []
    assert e.items() == {EPC: "shelf-1"}
    feed(e, 33, [(2, -49.0)])  # settle_epochs (2) later, still read there: it moved
    events = e.drain_events()
    assert [(ev.kind, ev.shelf, ev.from_shelf) for ev in events] == [
        (ItemEventKind.MOVED, "shelf-2", "shelf-1")
    ]
    assert e.items() == {EPC: "shelf-2"}


def test_one_read_louder_by_more_than_the_full_offset_puts_it_in_transit() -> None:
    """The home mean is -55.0, the offset 6 dB: -48.9 is louder by more, -49.0 is not."""
    loud = engine()
    on_shelf(loud)
    feed(loud, 30, [(2, -48.9)])
    assert missed_until_departure(loud, 30) == 5
    level = engine()
    on_shelf(level)
    feed(level, 30, [(2, -49.0)])
    assert missed_until_departure(level, 30) > 5  # its read-rate window


def test_a_faded_tag_silent_in_place_keeps_its_read_rate_window() -> None:
    """A weak tag (every 2nd epoch) fades: its own antenna misses it, a neighbour cross-reads
    it 12 dB weaker for a few epochs, then nothing. No sign of being carried: W = 14."""
    e = engine()
    on_shelf(e, epochs=200, every=2)  # last read at 198
    for epoch in range(199, 204):
        feed(e, epoch, [(2, HOME_RSSI - 12)])
    rate = e.read_rate(EPC)
    assert rate is not None
    window = departure_window(rate, e.config)
    assert window == 14
    assert missed_until_departure(e, 203) == window


def test_a_boundary_item_its_neighbour_reads_as_loud_is_not_in_transit() -> None:
    """Between antennas 1 and 2, read by both at nearly the same RSSI; antenna 1 misses it
    for a few epochs while 2 still reads it: not carried, its normal window."""
    e = engine()
    for epoch in range(60):
        feed(e, epoch, [(1, HOME_RSSI), (2, HOME_RSSI - 2)])
    assert [ev.kind for ev in e.drain_events()] == [ItemEventKind.ARRIVED]
    for epoch in range(60, 64):
        feed(e, epoch, [(2, HOME_RSSI - 2)])
    assert e.items() == {EPC: "shelf-1"}
    rate = e.read_rate(EPC)
    assert rate is not None
    assert missed_until_departure(e, 63) == departure_window(rate, e.config) > 5


def test_read_at_home_as_on_the_shelf_ends_transit_but_carried_past_it_does_not() -> None:
    back = engine()
    on_shelf(back)
    feed(back, 30, [(2, -48.0)])  # in transit
    feed(back, 31, [(1, HOME_RSSI)])  # put back: read as on its shelf
    assert missed_until_departure(back, 31) == 7  # its read-rate window again
    past = engine()
    on_shelf(past)
    feed(past, 30, [(2, -48.0)])  # in transit
    feed(past, 31, [(1, -45.0)])  # carried past its own antenna, held up close
    assert missed_until_departure(past, 31) == 5


def test_a_tag_without_a_settled_place_is_corrected_at_once_not_put_in_transit() -> None:
    """Read by antenna 1 only 10 times (< rssi_window 20): louder reads on antenna 2 are a
    correction of where it arrived, a move at once, as before."""
    e = engine()
    on_shelf(e, epochs=10)
    feed(e, 10, [(2, -45.0)])
    feed(e, 11, [(2, -45.0)])
    assert [(ev.kind, ev.shelf) for ev in e.drain_events()] == [(ItemEventKind.MOVED, "shelf-2")]


@pytest.mark.parametrize("bad", [0, 61])
def test_transit_window_is_validated(bad: int) -> None:
    with pytest.raises(ValueError, match="transit_window"):
        PresenceConfig(transit_window=bad)
