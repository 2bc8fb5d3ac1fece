"""The compartment state machine on its own: sensors and commands in, events out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from edge.locker.compartment import Compartment, TransitionRefusedError
from protocols.messages import CompartmentFlag as F
from protocols.messages import CompartmentState as S

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def fresh() -> Compartment:
    c = Compartment("0-01", 0, 0, door_ajar_after=timedelta(seconds=30))
    assert c.observe(False, False, at(0)) == []  # the first poll is the baseline
    return c


def test_full_bopis_cycle_with_every_event_and_cause() -> None:
    c = fresh()
    events = [c.reserve("order-1", at(3600), at(1))]
    events.append(c.open_for_loading(at(2)))
    events += c.observe(True, False, at(3))
    events += c.observe(True, True, at(4))
    events += c.observe(False, True, at(5))
    events.append(c.open_for_pickup("code_ok", at(10)))
    events += c.observe(True, True, at(11))
    events += c.observe(False, False, at(12))  # item taken and door shut in one poll
    assert [(e.previous, e.state, e.cause) for e in events] == [
        (S.AVAILABLE, S.RESERVED, "reserved"),
        (S.RESERVED, S.LOADING, "open_for_loading"),
        (S.LOADING, S.LOADING, "door_opened"),
        (S.LOADING, S.LOADING, "item_placed"),
        (S.LOADING, S.AWAITING_PICKUP, "loaded"),
        (S.AWAITING_PICKUP, S.PICKUP_OPEN, "code_ok"),
        (S.PICKUP_OPEN, S.PICKUP_OPEN, "door_opened"),
        (S.PICKUP_OPEN, S.PICKUP_OPEN, "item_removed"),
        (S.PICKUP_OPEN, S.AVAILABLE, "collected"),
    ]
    assert events[4].order_ref == "order-1"
    assert events[-1].order_ref is None
    assert not any(e.flags for e in events)


def test_loading_closed_empty_goes_back_to_reserved() -> None:
    c = fresh()
    c.reserve("o", at(100), at(0))
    c.open_for_loading(at(1))
    c.observe(True, False, at(2))
    (event,) = c.observe(False, False, at(3))
    assert (event.state, event.cause) == (S.RESERVED, "closed_empty")


def test_door_opened_without_unlock_is_forced_open_until_staff_opens() -> None:
    c = fresh()
    (event,) = c.observe(True, False, at(1))
    assert event.cause == "forced_open"
    assert F.FORCED_OPEN in event.flags
    c.observe(False, False, at(2))
    assert F.FORCED_OPEN in c.flags  # an alarm stays until someone looks
    assert F.FORCED_OPEN not in c.staff_open(at(3)).flags


def test_unlock_window_expiry_makes_a_late_opening_forced() -> None:
    c = fresh()
    c.staff_open(at(0))
    (event,) = c.observe(True, False, at(31))
    assert event.cause == "forced_open"


def test_door_ajar_after_threshold_and_cleared_on_close() -> None:
    c = fresh()
    c.staff_open(at(0))
    c.observe(True, False, at(1))
    assert c.tick(at(30)) == []
    (event,) = c.tick(at(31))
    assert event.cause == "door_ajar"
    assert F.DOOR_AJAR in event.flags
    assert c.tick(at(60)) == []  # reported once
    (closed,) = c.observe(False, False, at(61))
    assert F.DOOR_AJAR not in closed.flags


def test_hold_expiry_and_emptying() -> None:
    c = fresh()
    c.reserve("o", at(10), at(0))
    c.open_for_loading(at(1))
    c.observe(True, True, at(2))
    c.observe(False, True, at(3))
    (expired,) = c.tick(at(10))
    assert (expired.previous, expired.state, expired.cause) == (
        S.AWAITING_PICKUP,
        S.EXPIRED_HOLD,
        "hold_expired",
    )
    with pytest.raises(TransitionRefusedError, match="pickup needs awaiting_pickup"):
        c.open_for_pickup("code_ok", at(11))
    c.staff_open(at(12))
    c.observe(True, True, at(13))
    events = c.observe(False, False, at(14))
    assert [(e.state, e.cause) for e in events] == [
        (S.EXPIRED_HOLD, "item_removed"),
        (S.AVAILABLE, "emptied"),
    ]


def test_an_open_and_close_between_two_polls_still_counts_once_unlocked() -> None:
    """Staff empties an expired hold faster than a poll: the door reads shut at both polls,
    only the item sensor changed. Unlocked, that is an opening and a closing."""
    c = fresh()
    c.reserve("o", at(10), at(0))
    c.open_for_loading(at(1))
    c.observe(True, True, at(2))
    c.observe(False, True, at(3))
    c.tick(at(10))
    c.staff_open(at(12))
    events = c.observe(False, False, at(13))
    assert [(e.state, e.cause) for e in events] == [
        (S.EXPIRED_HOLD, "item_removed"),
        (S.EXPIRED_HOLD, "door_opened"),
        (S.AVAILABLE, "emptied"),
    ]


def test_an_item_change_with_the_door_shut_and_no_unlock_is_only_noted() -> None:
    c = fresh()
    c.reserve("o", at(10), at(0))
    c.open_for_loading(at(1))
    c.observe(True, True, at(2))
    c.observe(False, True, at(3))
    c.tick(at(10))
    events = c.observe(False, False, at(13))  # a sensor glitch, or a hand through a gap
    assert [(e.state, e.cause) for e in events] == [(S.EXPIRED_HOLD, "item_removed")]


def test_unlocked_door_that_never_opens_gives_the_state_back() -> None:
    c = fresh()
    c.reserve("o", at(100), at(0))
    c.open_for_loading(at(0))
    assert c.tick(at(30)) == []
    (event,) = c.tick(at(31))
    assert (event.state, event.cause) == (S.RESERVED, "not_opened")


def test_fault_flag_set_and_cleared_once() -> None:
    c = fresh()
    (on,) = c.set_fault(True, at(1))
    assert c.set_fault(True, at(2)) == []
    (off,) = c.set_fault(False, at(3))
    assert (on.cause, off.cause) == ("board_silent", "board_answering")
    assert F.FAULT in on.flags
    assert F.FAULT not in off.flags


def test_out_of_service_and_back() -> None:
    c = fresh()
    c.reserve("o", at(100), at(0))
    event = c.set_out_of_service(True, at(1))
    assert event is not None
    assert event.state is S.OUT_OF_SERVICE
    with pytest.raises(TransitionRefusedError):
        c.open_for_loading(at(2))
    back = c.set_out_of_service(False, at(3))
    assert back is not None
    assert back.state is S.RESERVED
    assert back.order_ref == "o"


def test_reserve_refuses_busy_faulty_or_past() -> None:
    c = fresh()
    with pytest.raises(TransitionRefusedError, match="past"):
        c.reserve("o", at(-1), at(0))
    c.set_fault(True, at(0))
    with pytest.raises(TransitionRefusedError, match="fault"):
        c.reserve("o", at(100), at(0))


def restored(state: S) -> Compartment:
    from edge.locker.reservations import SavedCompartment

    c = Compartment("0-01", 0, 0, unlock_window=timedelta(seconds=30))
    c.restore(SavedCompartment(state, order_ref="order-1", hold_until=at(3600)), at(0))
    return c


@pytest.mark.parametrize(
    ("state", "door_open", "occupied", "settled"),
    [
        (S.LOADING, False, True, [(S.LOADING, S.AWAITING_PICKUP, "loaded")]),
        (S.LOADING, False, False, [(S.LOADING, S.RESERVED, "closed_empty")]),
        (S.PICKUP_OPEN, False, False, [(S.PICKUP_OPEN, S.AVAILABLE, "collected")]),
        (S.PICKUP_OPEN, False, True, [(S.PICKUP_OPEN, S.AWAITING_PICKUP, "closed_not_collected")]),
        (S.AWAITING_PICKUP, False, True, []),
        (S.RESERVED, True, False, []),
    ],
)
def test_a_restored_compartment_settles_on_the_first_poll(
    state: S, door_open: bool, occupied: bool, settled: list[tuple[S, S, str]]
) -> None:
    c = restored(state)
    events = c.observe(door_open, occupied, at(1))
    assert [(e.previous, e.state, e.cause) for e in events] == settled
    assert F.FORCED_OPEN not in c.flags


def test_restored_mid_loading_with_the_door_open_waits_for_it_to_shut() -> None:
    c = restored(S.LOADING)
    assert c.observe(True, False, at(1)) == []  # the courier is at it
    assert c.tick(at(40)) == []  # past the unlock window: the door did open, no revert
    events = c.observe(True, True, at(41)) + c.observe(False, True, at(42))
    assert [e.cause for e in events] == ["item_placed", "loaded"]
    assert c.state is S.AWAITING_PICKUP


def test_release_frees_an_empty_hold_and_leaves_a_loaded_one_to_staff() -> None:
    c = fresh()
    c.reserve("o-1", at(3600), at(1))
    assert c.release("someone-else", at(2)) is None  # not its order: nothing happens
    event = c.release("o-1", at(3))
    assert event is not None
    assert (event.state, event.cause, c.order_ref) == (S.AVAILABLE, "released", None)
    assert c.release("o-1", at(4)) is None  # a second release changes nothing

    loaded = fresh()
    loaded.reserve("o-2", at(3600), at(1))
    loaded.open_for_loading(at(2))
    loaded.observe(True, True, at(3))
    loaded.observe(False, True, at(4))
    event = loaded.release("o-2", at(5))
    assert event is not None
    assert (event.state, loaded.order_ref) == (S.EXPIRED_HOLD, "o-2")
    loaded.staff_open(at(6))
    loaded.observe(True, False, at(7))
    assert [e.cause for e in loaded.observe(False, False, at(8))] == ["emptied"]
    assert loaded.state is S.AVAILABLE


def test_restore_hold_follows_the_item_sensor() -> None:
    empty = fresh()
    with pytest.raises(TransitionRefusedError, match="was collected or taken out"):
        empty.restore_hold("o-1", at(3600), True, at(1))  # loaded, but nothing is in it
    event = empty.restore_hold("o-1", at(3600), False, at(1))
    assert event is not None
    assert (event.state, event.cause) == (S.RESERVED, "hold_restored")
    assert empty.restore_hold("o-1", at(3600), False, at(2)) is None  # already held
    moved = empty.restore_hold("o-1", at(7200), False, at(3))  # an extension
    assert moved is not None
    assert (moved.cause, empty.hold_until) == ("hold_changed", at(7200))

    parcel = Compartment("0-02", 0, 1)
    parcel.observe(False, True, at(0))
    with pytest.raises(TransitionRefusedError, match="not empty"):
        parcel.restore_hold("o-3", at(3600), False, at(1))
    event = parcel.restore_hold("o-3", at(3600), True, at(1))
    assert event is not None
    assert event.state is S.AWAITING_PICKUP
    with pytest.raises(TransitionRefusedError, match="in the past"):
        fresh().restore_hold("o-4", at(1), False, at(2))
