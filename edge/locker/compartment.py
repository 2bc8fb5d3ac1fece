"""One compartment's state machine, from its door and item sensors and the commands.

    available ─reserve─► reserved ─open_for_loading─► loading ─door shut, item in─► awaiting_pickup
        ▲                   ▲  └──────────────────────── door shut, empty ◄──┘         │ code ok
        │                   └─ hold expired ─► expired_hold ─emptied─┐                 ▼
        └──────── door shut, item gone ◄── pickup_open ◄─────────────┴─────────────────┘
    any ─out_of_service─► out_of_service ─back in service─► available (or where it was)

A locker return (drop-off into an empty compartment):

    available ─start_return─► return_pending ─drop-off code─► return_open ─door shut, item in─►
    return_dropped ─staff empty it (door shut, empty)─► available
    return_open ─door shut, empty (or never opened)─► return_pending (the code opens it again)
    return_pending ─expiry─► available

Flags ride on top of the state: `door_ajar` (open longer than the threshold), `forced_open`
(the door opened with no unlock in the last `unlock_window_s`; cleared by a staff open),
`fault` (the board stopped answering; cleared by its next answer).

Pure logic, no I/O: every method takes `now` and returns the events it caused, each a
`CompartmentEvent` with the previous state and the cause. Sensor changes are events too
(the cloud derives dwell and door times from them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from protocols.messages import (
    CompartmentEvent,
    CompartmentFlag,
    CompartmentState,
    CompartmentStatus,
)

from .reservations import SavedCompartment

S = CompartmentState
F = CompartmentFlag

# States that hold an order (and so an order_ref).
_HOLDS_ORDER = frozenset(
    {
        S.RESERVED,
        S.LOADING,
        S.AWAITING_PICKUP,
        S.PICKUP_OPEN,
        S.EXPIRED_HOLD,
        S.RETURN_PENDING,
        S.RETURN_OPEN,
        S.RETURN_DROPPED,
    }
)
# The drop-off states: their order_ref is the order being returned, their grant a drop-off
# grant (protocols.pickup.dropoff_code), never a pickup one.
RETURN_STATES = frozenset({S.RETURN_PENDING, S.RETURN_OPEN, S.RETURN_DROPPED})


# A door that was unlocked for loading or pickup but never opened goes back to where it was.
_REVERT_IF_NOT_OPENED = {
    S.LOADING: S.RESERVED,
    S.PICKUP_OPEN: S.AWAITING_PICKUP,
    S.RETURN_OPEN: S.RETURN_PENDING,
}


class TransitionRefusedError(ValueError):
    """A command that does not fit the compartment's state; the message says why."""


@dataclass(slots=True)
class Compartment:
    id: str
    board: int
    lock: int
    door_ajar_after: timedelta = timedelta(seconds=60)
    unlock_window: timedelta = timedelta(seconds=30)

    state: CompartmentState = S.AVAILABLE
    door_open: bool = False
    occupied: bool = False
    flags: set[CompartmentFlag] = field(default_factory=set)
    order_ref: str | None = None
    hold_until: datetime | None = None
    _unlock_until: datetime | None = None
    _door_opened_at: datetime | None = None
    _sensed: bool = False  # the first poll sets the baseline
    _before_service_stop: CompartmentState | None = None

    # ------------------------------------------------------------------ reporting

    def status(self) -> CompartmentStatus:
        return CompartmentStatus(
            compartment=self.id,
            state=self.state,
            door_open=self.door_open,
            occupied=self.occupied,
            flags=sorted(self.flags),
            order_ref=self.order_ref,
        )

    def _event(self, cause: str, now: datetime, previous: CompartmentState) -> CompartmentEvent:
        return CompartmentEvent(
            compartment=self.id,
            state=self.state,
            previous=previous,
            cause=cause,
            door_open=self.door_open,
            occupied=self.occupied,
            flags=sorted(self.flags),
            order_ref=self.order_ref,
            at=now,
        )

    def _move(self, to: CompartmentState, cause: str, now: datetime) -> CompartmentEvent:
        previous, self.state = self.state, to
        if to not in _HOLDS_ORDER and to is not S.OUT_OF_SERVICE:
            self.order_ref = None
            self.hold_until = None
        return self._event(cause, now, previous)

    def saved(self) -> SavedCompartment:
        """What a restart must not lose (see edge/locker/reservations.py)."""
        return SavedCompartment(
            state=self.state,
            order_ref=self.order_ref,
            hold_until=self.hold_until,
            before_service=self._before_service_stop,
            forced_open=F.FORCED_OPEN in self.flags,
        )

    def restore(self, saved: SavedCompartment, now: datetime) -> None:
        """Back to what was saved, before the first poll. A door unlocked just before the
        restart gets a fresh unlock window; the first poll settles it (see `observe`)."""
        self.state = saved.state
        self.order_ref = saved.order_ref
        self.hold_until = saved.hold_until
        self._before_service_stop = saved.before_service
        if saved.forced_open:
            self.flags.add(F.FORCED_OPEN)
        if self.state in _REVERT_IF_NOT_OPENED:
            self._expect_unlock(now)

    def _note(self, cause: str, now: datetime) -> CompartmentEvent:
        return self._event(cause, now, self.state)

    def _expect_unlock(self, now: datetime) -> None:
        self._unlock_until = now + self.unlock_window

    # ------------------------------------------------------------------ sensors

    def observe(self, door_open: bool, occupied: bool, now: datetime) -> list[CompartmentEvent]:
        """Apply one poll's door and item readings."""
        if not self._sensed:
            self._sensed = True
            self.door_open, self.occupied = door_open, occupied
            if door_open:
                self._door_opened_at = now
                self._unlock_until = None  # restored mid-loading/pickup: it did open
            elif self.state in _REVERT_IF_NOT_OPENED:
                # Restored mid-loading or mid-pickup with the door shut: whatever happened
                # while the edge was down is over; the item sensor says what it was.
                self._unlock_until = None
                return [self._door_closed(now)]
            return []
        events: list[CompartmentEvent] = []
        if door_open and not self.door_open:
            self.door_open = True
            self._door_opened_at = now
            if self._unlock_until is not None and now <= self._unlock_until:
                self._unlock_until = None
                events.append(self._note("door_opened", now))
            else:
                self.flags.add(F.FORCED_OPEN)
                events.append(self._note("forced_open", now))
        if occupied != self.occupied:
            self.occupied = occupied
            events.append(self._note("item_placed" if occupied else "item_removed", now))
            if (
                not door_open
                and not self.door_open
                and self._unlock_until is not None
                and now <= self._unlock_until
            ):
                # Unlocked, the item changed, the door shut at both polls: it opened and
                # closed between them (faster than a poll), so that is what happened.
                self._unlock_until = None
                events.append(self._note("door_opened", now))
                events.append(self._door_closed(now))
        if not door_open and self.door_open:
            self.door_open = False
            self._door_opened_at = None
            self.flags.discard(F.DOOR_AJAR)
            events.append(self._door_closed(now))
        return events

    def _door_closed(self, now: datetime) -> CompartmentEvent:
        if self.state is S.LOADING:
            if self.occupied:
                return self._move(S.AWAITING_PICKUP, "loaded", now)
            return self._move(S.RESERVED, "closed_empty", now)
        if self.state is S.PICKUP_OPEN:
            if self.occupied:
                return self._move(S.AWAITING_PICKUP, "closed_not_collected", now)
            return self._move(S.AVAILABLE, "collected", now)
        if self.state is S.EXPIRED_HOLD and not self.occupied:
            return self._move(S.AVAILABLE, "emptied", now)
        if self.state is S.RETURN_OPEN:
            if self.occupied:
                return self._move(S.RETURN_DROPPED, "returned_dropped", now)
            # nothing went in: the return stays open to the same code until it expires
            return self._move(S.RETURN_PENDING, "return_closed_empty", now)
        if self.state is S.RETURN_DROPPED and not self.occupied:
            return self._move(S.AVAILABLE, "return_emptied", now)
        return self._note("door_closed", now)

    def tick(self, now: datetime) -> list[CompartmentEvent]:
        """Time-driven changes: door ajar, hold expiry."""
        events: list[CompartmentEvent] = []
        if (
            self.door_open
            and F.DOOR_AJAR not in self.flags
            and self._door_opened_at is not None
            and now - self._door_opened_at >= self.door_ajar_after
        ):
            self.flags.add(F.DOOR_AJAR)
            events.append(self._note("door_ajar", now))
        if (
            self.state in (S.RESERVED, S.AWAITING_PICKUP)
            and self.hold_until is not None
            and now >= self.hold_until
        ):
            events.append(self._move(S.EXPIRED_HOLD, "hold_expired", now))
        if (
            self.state is S.RETURN_PENDING
            and self.hold_until is not None
            and now >= self.hold_until
        ):
            # nothing was dropped off: the compartment is empty, so simply free again
            events.append(self._move(S.AVAILABLE, "return_expired", now))
        if (
            self.state in _REVERT_IF_NOT_OPENED
            and self._unlock_until is not None
            and now > self._unlock_until
        ):
            # Unlocked (or so we thought) but the door never opened: give the state back.
            self._unlock_until = None
            events.append(self._move(_REVERT_IF_NOT_OPENED[self.state], "not_opened", now))
        return events

    def unlock_failed(self, now: datetime) -> list[CompartmentEvent]:
        """The board did not take the unlock: undo what the command started."""
        self._unlock_until = None
        if self.state in _REVERT_IF_NOT_OPENED:
            return [self._move(_REVERT_IF_NOT_OPENED[self.state], "unlock_failed", now)]
        return [self._note("unlock_failed", now)]

    def alarm(self, cause: str, now: datetime) -> CompartmentEvent:
        """An alarm about this compartment that changes nothing (e.g. a code burst)."""
        return self._note(cause, now)

    def set_fault(self, fault: bool, now: datetime) -> list[CompartmentEvent]:
        if fault == (F.FAULT in self.flags):
            return []
        if fault:
            self.flags.add(F.FAULT)
            return [self._note("board_silent", now)]
        self.flags.discard(F.FAULT)
        return [self._note("board_answering", now)]

    # ------------------------------------------------------------------ commands

    def _require(self, *states: CompartmentState, action: str) -> None:
        if self.state not in states:
            allowed = ", ".join(s.value for s in states)
            raise TransitionRefusedError(
                f"compartment {self.id} is {self.state.value}; {action} needs {allowed}"
            )

    def reserve(self, order_ref: str, hold_until: datetime, now: datetime) -> CompartmentEvent:
        self._require(S.AVAILABLE, action="reserve")
        if self.occupied:
            raise TransitionRefusedError(f"compartment {self.id} is not empty")
        if F.FAULT in self.flags:
            raise TransitionRefusedError(f"compartment {self.id} has a board fault")
        if hold_until <= now:
            raise TransitionRefusedError("the hold expiry is in the past")
        self.order_ref, self.hold_until = order_ref, hold_until
        return self._move(S.RESERVED, "reserved", now)

    def open_for_loading(self, now: datetime) -> CompartmentEvent:
        """The caller unlocks the door after this."""
        self._require(S.RESERVED, action="open_for_loading")
        self._expect_unlock(now)
        return self._move(S.LOADING, "open_for_loading", now)

    def open_for_pickup(self, cause: str, now: datetime) -> CompartmentEvent:
        """A valid pickup code: the caller unlocks the door after this."""
        self._require(S.AWAITING_PICKUP, action="pickup")
        self._expect_unlock(now)
        return self._move(S.PICKUP_OPEN, cause, now)

    def start_return(self, order_ref: str, until: datetime, now: datetime) -> CompartmentEvent:
        """Keep this empty compartment for the drop-off of `order_ref`'s return until
        `until` (the drop-off code's expiry)."""
        self._require(S.AVAILABLE, action="a return")
        if self.occupied:
            raise TransitionRefusedError(f"compartment {self.id} is not empty")
        if F.FAULT in self.flags:
            raise TransitionRefusedError(f"compartment {self.id} has a board fault")
        if until <= now:
            raise TransitionRefusedError("the drop-off expiry is in the past")
        self.order_ref, self.hold_until = order_ref, until
        return self._move(S.RETURN_PENDING, "return_reserved", now)

    def open_for_dropoff(self, now: datetime) -> CompartmentEvent:
        """A valid drop-off code: the caller unlocks the door after this."""
        self._require(S.RETURN_PENDING, action="a drop-off")
        self._expect_unlock(now)
        return self._move(S.RETURN_OPEN, "dropoff_code_ok", now)

    def staff_open(self, now: datetime) -> CompartmentEvent:
        """Staff opens any door (inspection, returns); acknowledges a forced-open alarm."""
        self._expect_unlock(now)
        self.flags.discard(F.FORCED_OPEN)
        return self._note("staff_open", now)

    def release(self, order_ref: str, now: datetime) -> CompartmentEvent | None:
        """The order no longer holds this compartment (cancelled, or unknown to the cloud).
        Empty: available again. With the parcel in: `expired_hold` until staff empty it.
        None when there is nothing to do (another order's, or already released)."""
        if self.order_ref != order_ref:
            return None
        if self.state in (S.EXPIRED_HOLD, S.RETURN_DROPPED):
            return None  # a parcel staff must take out; the door close frees it
        if self.state is S.RETURN_PENDING:
            return self._move(S.AVAILABLE, "released", now)  # a drop-off called off
        self._require(S.RESERVED, S.AWAITING_PICKUP, action="release")
        if self.occupied:
            return self._move(S.EXPIRED_HOLD, "released", now)
        return self._move(S.AVAILABLE, "released", now)

    def restore_hold(
        self, order_ref: str, hold_until: datetime, loaded: bool, now: datetime
    ) -> CompartmentEvent | None:
        """The cloud says this compartment holds `order_ref` until `hold_until` (its view,
        re-sent on every birth, or an extension): take the hold back if the edge lost it,
        move its end if it changed. None if nothing changed."""
        if self.order_ref == order_ref:
            if self.hold_until != hold_until and self.state is not S.EXPIRED_HOLD:
                self.hold_until = hold_until  # extended (or shortened) by the cloud
                return self._note("hold_changed", now)
            return None
        self._require(S.AVAILABLE, action="restore a hold")
        if hold_until <= now:
            raise TransitionRefusedError("the hold expiry is in the past")
        # The cloud's view may be older than what happened here (a pickup made while the
        # uplink was down, reported after this birth): the sensor decides. A loaded order
        # whose compartment is empty was collected or taken out; one still waiting for its
        # parcel must find the compartment empty.
        if loaded and not self.occupied:
            raise TransitionRefusedError(
                f"compartment {self.id} is empty: the parcel of {order_ref} was collected"
                " or taken out here"
            )
        if not loaded and self.occupied:
            raise TransitionRefusedError(f"compartment {self.id} is not empty")
        self.order_ref, self.hold_until = order_ref, hold_until
        return self._move(S.AWAITING_PICKUP if loaded else S.RESERVED, "hold_restored", now)

    def set_out_of_service(self, out: bool, now: datetime) -> CompartmentEvent | None:
        if out:
            if self.state is S.OUT_OF_SERVICE:
                return None
            self._before_service_stop = self.state
            return self._move(S.OUT_OF_SERVICE, "out_of_service", now)
        if self.state is not S.OUT_OF_SERVICE:
            return None
        back = self._before_service_stop or S.AVAILABLE
        if self.order_ref is None and not self.occupied:
            back = S.AVAILABLE
        return self._move(back, "back_in_service", now)
