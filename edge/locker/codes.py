"""Offline pickup codes: derived, verified, used once, guarded by back-off.

A code is derived from a per-locker secret key with HMAC-SHA256 over the bank, the
compartment, the order sequence and the expiry, so the edge checks it with the cloud
unreachable; the cloud derives the same code to send to the shopper and stores only
`code_hash(...)` of it. See docs/lockers.md for the security argument.

- keypad code: 8 decimal digits (the first 64 bits of the HMAC, mod 10^8);
- QR payload: `SGP1:<bank>:<compartment>:<seq>:<expiry>:<tag>` with a 128-bit tag, which
  names its compartment and cannot be guessed.

Keys never appear in logs or reprs (`PickupKey.__repr__` hides them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

MIN_KEY_BYTES = 16  # 128 bits
_DOMAIN = b"storegate-pickup-v1"
_QR = re.compile(
    r"^SGP1:(?P<bank>[A-Za-z0-9_.-]{1,64}):(?P<compartment>[A-Za-z0-9_.-]{1,64})"
    r":(?P<seq>[0-9]{1,12}):(?P<expiry>[0-9]{1,12}):(?P<tag>[A-Z2-7]{26})$"
)


class PickupKey:
    """A per-locker secret (≥ 128 bits). Its bytes never reach a log line."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a pickup key needs at least {MIN_KEY_BYTES * 8} bits")
        self._key = key

    @classmethod
    def from_env(cls, name: str) -> PickupKey:
        """The key as hex in the environment variable `name` (the variable, never the key,
        is what configs name)."""
        value = os.environ.get(name)
        if not value:
            raise ValueError(f"environment variable {name} (the locker code key) is not set")
        try:
            key = bytes.fromhex(value.strip())
        except ValueError:
            raise ValueError(f"environment variable {name} is not hex") from None
        return cls(key)

    @classmethod
    def generate(cls) -> PickupKey:
        return cls(secrets.token_bytes(32))

    def hex(self) -> str:
        """For provisioning only (writing the env file); never log it."""
        return self._key.hex()

    def mac(self, message: bytes) -> bytes:
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "PickupKey(<hidden>)"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a code opens: one compartment for one order until `expiry` (whole seconds: the
    code covers the Unix time, so build grants with `Grant.make`)."""

    bank: str
    compartment: str
    order_seq: int
    expiry: datetime

    @classmethod
    def make(cls, bank: str, compartment: str, order_seq: int, expiry: datetime) -> Grant:
        return cls(bank, compartment, order_seq, expiry.astimezone(UTC).replace(microsecond=0))

    def message(self) -> bytes:
        expiry = int(self.expiry.timestamp())
        return b"|".join(
            [
                _DOMAIN,
                self.bank.encode(),
                self.compartment.encode(),
                b"%d" % self.order_seq,
                b"%d" % expiry,
            ]
        )


def keypad_code(key: PickupKey, grant: Grant, digits: int = 8) -> str:
    value = int.from_bytes(key.mac(grant.message())[:8], "big") % 10**digits
    return f"{value:0{digits}d}"


def _tag(key: PickupKey, grant: Grant) -> str:
    return base64.b32encode(key.mac(b"qr|" + grant.message())[:16]).decode().rstrip("=")


def qr_payload(key: PickupKey, grant: Grant) -> str:
    expiry = int(grant.expiry.timestamp())
    return f"SGP1:{grant.bank}:{grant.compartment}:{grant.order_seq}:{expiry}:{_tag(key, grant)}"


@dataclass(frozen=True, slots=True)
class QrEntry:
    grant: Grant
    tag: str


def parse_qr(text: str) -> QrEntry | None:
    match = _QR.match(text)
    if match is None:
        return None
    grant = Grant(
        bank=match["bank"],
        compartment=match["compartment"],
        order_seq=int(match["seq"]),
        expiry=datetime.fromtimestamp(int(match["expiry"]), UTC),
    )
    return QrEntry(grant, match["tag"])


def verify_qr(key: PickupKey, entry: QrEntry) -> bool:
    return hmac.compare_digest(_tag(key, entry.grant), entry.tag)


def code_hash(code: str, *, bank: str, compartment: str, order_seq: int) -> str:
    """What the cloud stores instead of a code, and what `locker.set_code` may carry.

    scrypt (N=2^12, r=8: ~4 MiB, a few ms here, tens of ms on a Pi) salted with where the
    code is valid, so a leaked table cannot be checked against all codes at once and each
    guess costs real work: 10^8 guesses for one 8-digit code cost days of CPU, not seconds.
    """
    salt = b"|".join([_DOMAIN, bank.encode(), compartment.encode(), b"%d" % order_seq])
    digest = hashlib.scrypt(code.encode(), salt=salt, n=2**12, r=8, p=1, dklen=32)
    return digest.hex()


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
