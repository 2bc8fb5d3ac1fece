"""Checking pickup codes at the locker: single use, back-off and the burst alarm.

The derivation itself (`PickupKey`, `Grant`, `keypad_code`, `qr_payload`) lives in
`protocols.pickup`, shared with the cloud, which derives the same code for the shopper.
The edge derives codes from its own copy of the bank's key; the cloud never sends a code
or anything a code could be recovered from. See docs/lockers.md for the security argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from protocols.pickup import Grant

# --------------------------------------------------------------------------- attempts


@dataclass(slots=True)
class _Scope:
    failures: int = 0
    locked_until: datetime | None = None
    last_failure: datetime | None = None
    recent: list[datetime] = field(default_factory=list)
    alarm_until: datetime | None = None  # no second alarm for the same burst before this


@dataclass(frozen=True, slots=True)
class AttemptVerdict:
    allowed: bool
    retry_at: datetime | None = None


@dataclass(slots=True)
class AttemptGuard:
    """Exponential back-off per scope (an input device: the keypad, the QR scanner) and a
    burst alarm.

    The first `free_failures` wrong codes cost nothing (typos); each further one locks the
    scope for `base * 2^(n - free_failures - 1)`, capped at `max_lockout`. `alarm_failures`
    attempts within `alarm_window` that were wrong or refused during a lockout raise an
    alarm (returned by `fail` / `refuse`), at most one per `alarm_window` and scope. A
    success, or `forget_after` without failures (and no lockout running), resets the scope.

    Scopes are named by the caller, never by what an entry claims: a counter keyed by
    anything the attacker chooses could be multiplied until it evicts the one that matters.
    Memory is bounded by `max_scopes`, but a scope whose lockout or alarm window runs is
    never forgotten to make room: a new scope is then refused (fail closed) instead.
    """

    free_failures: int = 3
    base: timedelta = timedelta(seconds=2)
    max_lockout: timedelta = timedelta(minutes=15)
    alarm_failures: int = 5
    alarm_window: timedelta = timedelta(minutes=10)
    forget_after: timedelta = timedelta(hours=1)
    max_scopes: int = 64
    _scopes: dict[str, _Scope] = field(default_factory=dict)

    def _busy(self, state: _Scope, now: datetime) -> bool:
        """A lockout, an alarm window or failures that could still add up to an alarm."""
        return (
            (state.locked_until is not None and now < state.locked_until)
            or (state.alarm_until is not None and now < state.alarm_until)
            or any(now - t < self.alarm_window for t in state.recent)
        )

    def _scope(self, scope: str, now: datetime) -> _Scope | None:
        state = self._scopes.get(scope)
        if (
            state is not None
            and state.last_failure is not None
            and now - state.last_failure >= self.forget_after
            and not self._busy(state, now)
        ):
            state = None  # quiet long enough: the slate is clean again
        if state is None:
            if scope not in self._scopes and len(self._scopes) >= self.max_scopes:
                idle = [k for k, s in self._scopes.items() if not self._busy(s, now)]
                if not idle:
                    return None
                del self._scopes[idle[0]]
            state = self._scopes[scope] = _Scope()
        return state

    def check(self, scope: str, now: datetime) -> AttemptVerdict:
        state = self._scope(scope, now)
        if state is None:  # no room without forgetting a running lockout: refuse
            return AttemptVerdict(False, now + self.base)
        if state.locked_until is not None and now < state.locked_until:
            return AttemptVerdict(False, state.locked_until)
        return AttemptVerdict(True)

    def fail(self, scope: str, now: datetime) -> bool:
        """Record a wrong code; True when this failure completes a burst (alarm)."""
        state = self._scope(scope, now)
        if state is None:
            return False
        state.failures += 1
        state.last_failure = now
        over = state.failures - self.free_failures
        if over > 0:
            lockout = min(self.base * 2 ** (over - 1), self.max_lockout)
            state.locked_until = now + lockout
        return self._attempt(state, now)

    def refuse(self, scope: str, now: datetime) -> bool:
        """Record an attempt refused by a running lockout: it proves nothing about the code,
        but it is part of the burst. True when it completes one (alarm)."""
        state = self._scope(scope, now)
        return state is not None and self._attempt(state, now)

    def _attempt(self, state: _Scope, now: datetime) -> bool:
        state.recent = [t for t in state.recent if now - t < self.alarm_window] + [now]
        if len(state.recent) < self.alarm_failures:
            return False
        state.recent.clear()
        if state.alarm_until is not None and now < state.alarm_until:
            return False  # the same burst still: it has raised its alarm
        state.alarm_until = now + self.alarm_window
        return True

    def succeed(self, scope: str) -> None:
        self._scopes.pop(scope, None)


@dataclass(slots=True)
class UsedCodes:
    """Single use: a grant once redeemed is refused until its expiry, then forgotten."""

    max_entries: int = 10_000
    _used: dict[tuple[str, str, int], datetime] = field(default_factory=dict)

    def mark(self, grant: Grant) -> None:
        if len(self._used) >= self.max_entries:
            self._used.pop(next(iter(self._used)))  # oldest first; expired ones go sooner
        self._used[(grant.bank, grant.compartment, grant.order_seq)] = grant.expiry

    def used(self, grant: Grant, now: datetime) -> bool:
        for key in [k for k, expiry in self._used.items() if expiry <= now]:
            del self._used[key]
        return (grant.bank, grant.compartment, grant.order_seq) in self._used
