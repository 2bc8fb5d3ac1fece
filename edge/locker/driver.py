"""The locker bank driver: polls CU16 boards, runs the compartments, verifies codes offline.

Registered as `cu16` (a real bus: serial, pty or TCP). Its simulated twin `sim-cu16`
(simulators/drivers/cu16.py) runs the byte-level simulator on a pty and drives it through
this very code.

Options (`devices[].options` in the edge config)::

    transport: serial:///dev/ttyUSB0   # or tcp://10.0.0.5:4001, pty:///dev/pts/3 (cu16 only)
    keypad: serial:///dev/ttyACM0      # optional keypad / QR scanner line (cu16 only)
    boards: [0]                        # board addresses on this bus
    locks_per_board: 16
    polarity: open_is_1                # or locked_is_1: what a lock bit of 1 means
    unlock_answers: true               # does the board reply to an unlock?
    poll_interval_s: 0.3               # 0.2 .. 0.5
    codes_key_env: STOREGATE_LOCKER_KEY  # NAME of the env var holding the hex key
    state_path: /var/lib/storegate-edge/locker-bank-1.sqlite3  # default: beside the outbox
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.drivers.base import (
    CommandOutcome,
    DeviceConfig,
    Driver,
    DriverContext,
    DriverSnapshot,
    DriverSpec,
)
from protocols import cu16
from protocols.messages import (
    Command,
    CompartmentEvent,
    CompartmentState,
    DeviceKind,
    DriverState,
    LockerEvents,
    utc_now,
)
from protocols.pickup import (
    Grant,
    PickupKey,
    QrEntry,
    dropoff_code,
    keypad_code,
    parse_qr,
    verify_qr,
)

from .audit import AuditLog
from .bus import BoardSilentError, BusClosedError, BusMaster
from .codes import AttemptGuard, UsedCodes
from .compartment import RETURN_STATES, Compartment, TransitionRefusedError
from .reservations import ReservationStore, SavedCompartment
from .transport import TransportUrl, open_transport

log = logging.getLogger(__name__)

_MAX_EVENTS_PER_MESSAGE = 1_000  # LockerEvents.events max_length
_MAX_KEYPAD_LINE = 128
_RECONNECT_MAX_S = 10.0


class LockerBankOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boards: list[int] = Field(default=[0], min_length=1, max_length=cu16.MAX_BOARDS)
    locks_per_board: int = Field(default=cu16.LOCKS_PER_BOARD, ge=1, le=cu16.LOCKS_PER_BOARD)
    polarity: cu16.LockPolarity = cu16.LockPolarity.OPEN_IS_ONE
    unlock_answers: bool = True
    poll_interval_s: float = Field(default=0.3, ge=0.2, le=0.5)
    request_timeout_s: float = Field(default=0.25, gt=0, le=5)
    retries: int = Field(default=2, ge=0, le=10)
    codes_key_env: str | None = Field(default=None, description="env var NAME, never the key")
    code_digits: int = Field(default=8, ge=6, le=10)
    door_ajar_s: float = Field(default=60, gt=0)
    unlock_window_s: float = Field(default=30, gt=0)
    backoff_free_failures: int = Field(default=3, ge=0)
    backoff_base_s: float = Field(default=2, gt=0)
    backoff_max_s: float = Field(default=900, gt=0)
    alarm_failures: int = Field(default=5, ge=1)
    audit_path: str | None = None
    audit_max_bytes: int = Field(default=4 * 1024 * 1024, ge=4096)
    audit_keep: int = Field(default=4, ge=1)
    state_path: str | None = Field(
        default=None,
        description="SQLite file keeping holds and pickup grants across restarts"
        " (default: locker-<bank>.sqlite3 beside the outbox)",
    )


class Cu16Options(LockerBankOptions):
    transport: str
    keypad: str | None = None


@dataclass(slots=True)
class _Counters:
    board_faults: int = 0
    code_ok: int = 0
    code_wrong: int = 0
    code_refused: int = 0
    code_alarms: int = 0
    dropoff_ok: int = 0
    keypad_lines_dropped: int = 0
    reconnects: int = 0
    polls: int = 0
    state_save_errors: int = 0


class LockerDriver(Driver):
    kind = DeviceKind.LOCKER_BANK
    driver_name = "cu16"

    def __init__(self, device: str, options: LockerBankOptions, key: PickupKey | None) -> None:
        super().__init__(device)
        self.options = options
        self._key = key
        self._transport: TransportUrl | None = None
        self._keypad: TransportUrl | None = None
        if isinstance(options, Cu16Options):
            self._transport = TransportUrl.parse(options.transport)
            self._keypad = TransportUrl.parse(options.keypad) if options.keypad else None
        self.compartments: dict[str, Compartment] = {}
        self._by_address: dict[tuple[int, int], Compartment] = {}
        for board in options.boards:
            cu16.address(board)  # validates the range
            for lock in range(options.locks_per_board):
                c = Compartment(
                    id=f"{board}-{lock + 1:02d}",
                    board=board,
                    lock=lock,
                    door_ajar_after=timedelta(seconds=options.door_ajar_s),
                    unlock_window=timedelta(seconds=options.unlock_window_s),
                )
                self.compartments[c.id] = c
                self._by_address[(board, lock)] = c
        # The grant each compartment's pickup code (or, in a return state, drop-off code) is
        # derived from (no code is stored).
        self._grants: dict[str, Grant] = {}
        self._guard = AttemptGuard(
            free_failures=options.backoff_free_failures,
            base=timedelta(seconds=options.backoff_base_s),
            max_lockout=timedelta(seconds=options.backoff_max_s),
            alarm_failures=options.alarm_failures,
        )
        self._used = UsedCodes()
        self._used_dropoffs = UsedCodes()
        self._newly_used_dropoffs: list[Grant] = []
        self._store: ReservationStore | None = None
        self._saved: dict[str, SavedCompartment] = {}
        self._newly_used: list[Grant] = []
        self._hash_ignored_logged = False
        self._save_failing = False
        self._state_path = Path(options.state_path) if options.state_path else None
        self._audit = (
            AuditLog(
                Path(options.audit_path),
                max_bytes=options.audit_max_bytes,
                keep=options.audit_keep,
            )
            if options.audit_path
            else None
        )
        self._ctx: DriverContext | None = None
        self._bus: BusMaster | None = None
        self._pending: list[CompartmentEvent] = []
        self._silent_boards: set[int] = set()
        self._reported: tuple[DriverState, str | None] | None = None
        self.counters = _Counters()
        self.ready = asyncio.Event()  # set after the first full poll

    # ------------------------------------------------------------------ durable state

    def use_state_dir(self, directory: Path) -> None:
        """Keep holds and grants in `state_path`, or else in `directory` (the outbox's).
        Without either (a bare driver in a test) they live in memory only."""
        if self._state_path is None:
            self._state_path = directory / f"locker-{self.device}.sqlite3"

    def _open_state(self) -> None:
        """Open the state file and restore what an earlier run saved: once, on first use
        (a driver created only to check a config never touches the file)."""
        path = self._state_path
        if self._store is not None or path is None:
            return
        self._store = ReservationStore(path, self.device)
        now = utc_now()
        saved = self._store.load()
        gone = sorted(set(saved) - set(self.compartments))
        if gone:
            log.warning(
                "locker %s: %s holds state for compartment(s) %s this config lacks; ignored",
                self.device,
                path,
                ", ".join(gone),
            )
        for cid, row in saved.items():
            c = self.compartments.get(cid)
            if c is None:
                continue
            c.restore(row, now)
            if row.grant is not None:
                self._grants[cid] = row.grant
            self._saved[cid] = row
        for grant in self._store.used_grants(now):
            self._used.mark(grant)
        for grant in self._store.used_grants(now, dropoffs=True):
            self._used_dropoffs.mark(grant)
        held = sum(1 for c in self.compartments.values() if c.order_ref is not None)
        log.info("locker %s: state in %s; %d compartment(s) hold orders", self.device, path, held)

    def _persist(self) -> None:
        """Commit what changed since the last call (compares, so cheap on every poll)."""
        if self._store is None:
            return
        changed: dict[str, SavedCompartment] = {}
        for cid, c in self.compartments.items():
            row = c.saved()
            row = SavedCompartment(
                state=row.state,
                order_ref=row.order_ref,
                hold_until=row.hold_until,
                before_service=row.before_service,
                forced_open=row.forced_open,
                grant=self._grants.get(cid),
            )
            if self._saved.get(cid, SavedCompartment(CompartmentState.AVAILABLE)) != row:
                changed[cid] = row
        if not changed and not self._newly_used and not self._newly_used_dropoffs:
            return
        spent = self._newly_used or self._newly_used_dropoffs
        try:
            self._store.save(
                changed,
                self._newly_used,
                utc_now() if spent else None,
                used_dropoffs=self._newly_used_dropoffs,
            )
        except sqlite3.Error as exc:
            # Kept in memory and tried again on every poll; the bank keeps working (a
            # shopper with the right code is not turned away because a disk is full).
            self.counters.state_save_errors += 1
            if self.counters.state_save_errors == 1 or not self._save_failing:
                log.error(
                    "locker %s: cannot save its state to %s (holds would not survive a"
                    " restart; retrying every poll): %s",
                    self.device,
                    self._store.path,
                    exc,
                )
            self._save_failing = True
            return
        if self._save_failing:
            self._save_failing = False
            log.warning("locker %s: state saved again to %s", self.device, self._store.path)
        self._newly_used = []
        self._newly_used_dropoffs = []
        self._saved |= changed

    # ------------------------------------------------------------------ run

    async def run(self, ctx: DriverContext) -> None:
        self._ctx = ctx
        self._open_state()
        delay = 0.5
        while True:
            url = self._transport
            assert url is not None, "a transport is set before run()"
            try:
                streams = await open_transport(url)
            except OSError as exc:
                self._line_down(str(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RECONNECT_MAX_S)
                continue
            bus = BusMaster(
                streams,
                timeout_s=self.options.request_timeout_s,
                retries=self.options.retries,
                unlock_answers=self.options.unlock_answers,
            )
            self._bus = bus
            keypad_task = (
                asyncio.create_task(self._keypad_loop(self._keypad), name="locker-keypad")
                if self._keypad
                else None
            )
            try:
                await self._poll_loop(bus)
            except BusClosedError as exc:
                self._line_down(str(exc))
            finally:
                self._bus = None
                if keypad_task is not None:
                    keypad_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keypad_task
                await bus.close()
            self.counters.reconnects += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _poll_loop(self, bus: BusMaster) -> None:
        while True:
            started = time.monotonic()
            for board in self.options.boards:
                try:
                    reply = await bus.read_state(board)
                except BoardSilentError:
                    self._board_silent(board)
                else:
                    self._apply(board, reply)
            now = utc_now()
            for c in self.compartments.values():
                self._pending += c.tick(now)
            self.counters.polls += 1
            self._report_state()
            self._flush()
            self.ready.set()
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.0, self.options.poll_interval_s - elapsed))

    def _apply(self, board: int, reply: cu16.StateReply) -> None:
        now = utc_now()
        was_silent = board in self._silent_boards
        self._silent_boards.discard(board)
        for lock in range(self.options.locks_per_board):
            c = self._by_address[(board, lock)]
            if was_silent:
                self._pending += c.set_fault(False, now)
            self._pending += c.observe(
                reply.is_open(lock, self.options.polarity), reply.has_item(lock), now
            )

    def _board_silent(self, board: int) -> None:
        if board not in self._silent_boards:
            self.counters.board_faults += 1
            log.warning("locker %s: board %d is not answering", self.device, board)
        self._silent_boards.add(board)
        now = utc_now()
        for lock in range(self.options.locks_per_board):
            self._pending += self._by_address[(board, lock)].set_fault(True, now)

    def _line_down(self, reason: str) -> None:
        log.warning("locker %s: bus down: %s", self.device, reason)
        for board in self.options.boards:
            self._board_silent(board)
        self._flush()
        self._set_state(DriverState.DEGRADED, f"bus down: {reason}")

    def _report_state(self) -> None:
        if self._silent_boards:
            boards = ", ".join(str(b) for b in sorted(self._silent_boards))
            self._set_state(DriverState.DEGRADED, f"board(s) {boards} not answering")
        else:
            self._set_state(DriverState.RUNNING, None)

    def _set_state(self, state: DriverState, error: str | None) -> None:
        if self._reported != (state, error) and self._ctx is not None:
            self._reported = (state, error)
            self._ctx.set_state(state, error)

    def _flush(self) -> None:
        self._settle_dropoffs()
        self._persist()
        if not self._pending or self._ctx is None:
            return
        events, self._pending = self._pending, []
        if self._audit is not None:
            for event in events:
                self._audit.append("event", event.model_dump(mode="json"), at=event.at)
        for i in range(0, len(events), _MAX_EVENTS_PER_MESSAGE):
            chunk = events[i : i + _MAX_EVENTS_PER_MESSAGE]
            self._ctx.emit(LockerEvents, bank=self.device, events=chunk)

    def _record(self, kind: str, **data: Any) -> None:
        if self._audit is not None:
            self._audit.append(kind, data)

    # ------------------------------------------------------------------ unlocking

    async def _unlock(self, c: Compartment) -> str | None:
        """Unlock one door; None on success, else why not (the compartment is rolled back)."""
        bus = self._bus
        reason: str | None = None
        if bus is None:
            reason = "the locker bus is down"
        else:
            try:
                await bus.unlock(c.board, c.lock)
            except BoardSilentError as exc:
                reason = str(exc)
            except BusClosedError as exc:
                reason = f"the locker bus is down: {exc}"
        if reason is not None:
            self._pending += c.unlock_failed(utc_now())
        return reason

    # ------------------------------------------------------------------ codes

    async def _keypad_loop(self, url: TransportUrl) -> None:
        while True:
            try:
                reader, writer = await open_transport(url)
            except OSError as exc:
                log.warning("locker %s: keypad unavailable: %s", self.device, exc)
                await asyncio.sleep(2)
                continue
            try:
                while line := await reader.readline():
                    if len(line) > _MAX_KEYPAD_LINE:
                        self.counters.keypad_lines_dropped += 1
                        continue
                    text = line.decode("ascii", errors="replace").strip()
                    if text:
                        await self.enter_code(text)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                # ValueError: a line over the reader's limit; start over on a fresh line.
                log.warning("locker %s: keypad line error: %s", self.device, exc)
            finally:
                writer.close()
            await asyncio.sleep(1)

    async def enter_code(self, text: str, *, source: str | None = None) -> bool:
        """A code typed or scanned at the locker. Verified here, with no cloud involved.

        Failures are counted per input device (`source`; by default `scanner` for a QR
        payload and `keypad` for anything else, since one line may carry both and a keypad
        cannot type `SGP1:`), never per anything the entry names."""
        self._open_state()
        now = utc_now()
        qr = parse_qr(text)
        scope = source or ("scanner" if text.startswith("SGP1:") else "keypad")
        verdict = self._guard.check(scope, now)
        if not verdict.allowed:
            self.counters.code_refused += 1
            self._record("code", outcome="refused_backoff", scope=scope)
            if self._guard.refuse(scope, now):
                self._code_alarm(scope, now)
            self._flush()
            return False
        if qr is not None and (
            qr.grant.bank != self.device or qr.grant.compartment not in self.compartments
        ):
            match = None  # a QR for a door this bank does not have: wrong, and said so
            outcome = "unknown_compartment"
        else:
            match = self._match_qr(qr, now) if qr else self._match_keypad(text, now)
            outcome = "wrong"
            if match is None and qr is None and (drop := self._match_dropoff(text, now)):
                return await self._open_for_dropoff(scope, drop, now)
        if match is None:
            self.counters.code_wrong += 1
            self._record("code", outcome=outcome, scope=scope)
            if self._guard.fail(scope, now):
                self._code_alarm(scope, now)
            self._flush()
            return False
        c, grant = match
        self._guard.succeed(scope)
        self._used.mark(grant)
        self._newly_used.append(grant)
        del self._grants[c.id]
        self.counters.code_ok += 1
        self._record("code", outcome="ok", scope=scope, compartment=c.id)
        self._pending.append(c.open_for_pickup("qr_ok" if qr else "code_ok", now))
        self._persist()  # the code is spent on disk before the door opens
        reason = await self._unlock(c)
        if reason is not None:
            log.warning("locker %s: code ok but unlock failed: %s", self.device, reason)
        self._flush()
        return reason is None

    def _candidates(self, now: datetime) -> list[tuple[Compartment, Grant]]:
        """Compartments a code may open now: awaiting pickup, with a grant that has not
        expired and was not used. Only a compartment's own current grant counts, so a code
        of an earlier hold (or of another compartment) never matches."""
        found = []
        for cid, grant in self._grants.items():
            c = self.compartments[cid]
            if (
                c.state is CompartmentState.AWAITING_PICKUP
                and grant.valid_at(now)
                and not self._used.used(grant, now)
            ):
                found.append((c, grant))
        return found

    def _match_keypad(self, text: str, now: datetime) -> tuple[Compartment, Grant] | None:
        key = self._key
        if key is None or not (
            text.isascii() and text.isdigit() and len(text) == self.options.code_digits
        ):
            return None
        for c, grant in self._candidates(now):
            if hmac.compare_digest(text, keypad_code(key, grant, self.options.code_digits)):
                return c, grant
        return None

    def _match_dropoff(self, text: str, now: datetime) -> Compartment | None:
        """The compartment waiting for a return whose drop-off code this is. Its grant is
        spent when the parcel is in (`returned_dropped`), not when the door opens: a
        shopper who shuts the door on nothing may open it again until the expiry."""
        key = self._key
        if key is None or not (
            text.isascii() and text.isdigit() and len(text) == self.options.code_digits
        ):
            return None
        for cid, grant in self._grants.items():
            c = self.compartments[cid]
            if (
                c.state is CompartmentState.RETURN_PENDING
                and grant.valid_at(now)
                and not self._used_dropoffs.used(grant, now)
                and hmac.compare_digest(text, dropoff_code(key, grant, self.options.code_digits))
            ):
                return c
        return None

    async def _open_for_dropoff(self, scope: str, c: Compartment, now: datetime) -> bool:
        self._guard.succeed(scope)
        self.counters.dropoff_ok += 1
        self._record("code", outcome="dropoff_ok", scope=scope, compartment=c.id)
        self._pending.append(c.open_for_dropoff(now))
        self._persist()
        reason = await self._unlock(c)
        if reason is not None:
            log.warning("locker %s: drop-off code ok but unlock failed: %s", self.device, reason)
        self._flush()
        return reason is None

    def _settle_dropoffs(self) -> None:
        """A parcel dropped off spends its code (on disk with the state change, so a
        re-sent `locker.return` cannot revive it); a return that ended drops its grant."""
        for event in self._pending:
            if event.previous not in RETURN_STATES:
                continue
            if event.cause == "returned_dropped":
                grant = self._grants.pop(event.compartment, None)
                if grant is not None:
                    self._used_dropoffs.mark(grant)
                    self._newly_used_dropoffs.append(grant)
            elif event.cause in ("return_expired", "released"):
                self._grants.pop(event.compartment, None)

    def _match_qr(self, qr: QrEntry, now: datetime) -> tuple[Compartment, Grant] | None:
        if self._key is None or qr.grant.bank != self.device or not verify_qr(self._key, qr):
            return None
        for c, grant in self._candidates(now):
            if grant == qr.grant:
                return c, grant
        return None

    def _code_alarm(self, scope: str, now: datetime) -> None:
        self.counters.code_alarms += 1
        log.warning("locker %s: burst of wrong pickup codes at %s", self.device, scope)
        self._record("alarm", cause="code_burst", scope=scope)
        holding = [c for c in self.compartments.values() if c.order_ref is not None]
        # No bank-level alarm message exists: the alarm rides on the compartments at risk.
        for c in holding or list(self.compartments.values()):
            self._pending.append(c.alarm("code_burst_alarm", now))

    # ------------------------------------------------------------------ commands

    def commands(self) -> frozenset[str]:
        return frozenset(
            {
                "locker.reserve",
                "locker.open_for_loading",
                "locker.set_code",
                "locker.out_of_service",
                "locker.open",
                "locker.release",
                "locker.hold",
                "locker.return",
            }
        )

    async def handle_command(self, command: Command) -> CommandOutcome:
        self._open_state()
        try:
            args = _CommandArgs.model_validate(command.args)
        except ValidationError as exc:
            return CommandOutcome(False, f"bad arguments: {exc.errors()[0]['msg']}")
        c = self.compartments.get(args.compartment)
        if c is None:
            return CommandOutcome(False, f"no compartment {args.compartment!r} in {self.device}")
        try:
            outcome = await self._run_command(command.name, c, args)
        except TransitionRefusedError as exc:
            outcome = CommandOutcome(False, str(exc))
        self._record("command", name=command.name, compartment=c.id, ok=outcome.ok)
        self._flush()
        return outcome

    async def _run_command(self, name: str, c: Compartment, args: _CommandArgs) -> CommandOutcome:
        now = utc_now()
        if name == "locker.reserve":
            if args.order_ref is None or args.expiry is None:
                return CommandOutcome(False, "locker.reserve needs order_ref and expiry")
            if args.order_seq is not None:
                self._require_key()  # before anything changes
            self._pending.append(c.reserve(args.order_ref, args.expiry, now))
            # A new order never inherits the previous order's code.
            self._grants.pop(c.id, None)
            if args.order_seq is not None:
                self._set_credential(c, args)
        elif name == "locker.set_code":
            if args.order_seq is None:
                return CommandOutcome(False, "locker.set_code needs order_seq")
            if c.order_ref is None:
                return CommandOutcome(False, f"compartment {c.id} holds no order")
            self._set_credential(c, args)
        elif name == "locker.open_for_loading":
            self._pending.append(c.open_for_loading(now))
            if reason := await self._unlock(c):
                return CommandOutcome(False, reason)
        elif name == "locker.open":
            self._pending.append(c.staff_open(now))
            if reason := await self._unlock(c):
                return CommandOutcome(False, reason)
        elif name == "locker.out_of_service":
            if event := c.set_out_of_service(args.out, now):
                self._pending.append(event)
        elif name == "locker.release":
            if args.order_ref is None:
                return CommandOutcome(False, "locker.release needs order_ref")
            if c.order_ref not in (None, args.order_ref):
                # not an error for the cloud: the order it cancels is not here any more
                log.info(
                    "locker %s: release of %s ignored, %s holds %s",
                    self.device,
                    args.order_ref,
                    c.id,
                    c.order_ref,
                )
            if event := c.release(args.order_ref, now):
                self._pending.append(event)
                self._grants.pop(c.id, None)  # its code opens nothing any more
        elif name == "locker.hold":
            if args.order_ref is None or args.expiry is None:
                return CommandOutcome(False, "locker.hold needs order_ref and expiry")
            grant = None
            if args.order_seq is not None:
                self._require_key()
                grant = Grant.make(self.device, c.id, args.order_seq, args.expiry)
                if c.order_ref != args.order_ref and self._used.used(grant, now):
                    return CommandOutcome(
                        False, f"the code of {args.order_ref} was already used at {c.id}"
                    )
            if event := c.restore_hold(args.order_ref, args.expiry, grant is not None, now):
                self._pending.append(event)
                self._grants.pop(c.id, None)
                log.warning(
                    "locker %s: hold of %s on %s restored from the cloud's view",
                    self.device,
                    args.order_ref,
                    c.id,
                )
            if grant is not None and self._grants.get(c.id) != grant:
                self._set_credential(c, args)
        elif name == "locker.return":
            if args.order_ref is None or args.expiry is None or args.order_seq is None:
                return CommandOutcome(False, "locker.return needs order_ref, order_seq and expiry")
            self._require_key()
            grant = Grant.make(self.device, c.id, args.order_seq, args.expiry)
            if self._used_dropoffs.used(grant, now):
                return CommandOutcome(
                    False, f"the drop-off code of {args.order_ref} at {c.id} was already used"
                )
            if c.state in RETURN_STATES and self._grants.get(c.id) == grant:
                pass  # a re-send of the return it already has
            else:
                self._pending.append(c.start_return(args.order_ref, grant.expiry, now))
                self._grants[c.id] = grant
        else:
            return CommandOutcome(False, f"{self.driver_name} driver has no command {name}")
        return CommandOutcome(True, result={"compartment": c.id, "state": c.state.value})

    def _require_key(self) -> None:
        if self._key is None:
            raise TransitionRefusedError(
                f"locker {self.device} has no pickup code key (codes_key_env): it cannot"
                " check pickup codes"
            )

    def _set_credential(self, c: Compartment, args: _CommandArgs) -> None:
        self._require_key()
        if args.code_hash is not None and not self._hash_ignored_logged:
            # An older cloud sends the code's hash; the key derives the code, so it is
            # not needed, and a hash of an 8-digit code is not kept anywhere.
            self._hash_ignored_logged = True
            log.warning(
                "locker %s: ignoring code_hash in a command (the edge derives codes from its"
                " key; upgrade the cloud so it stops sending it)",
                self.device,
            )
        expiry = args.expiry or c.hold_until
        if expiry is None or args.order_seq is None:
            raise TransitionRefusedError("a pickup code needs order_seq and an expiry")
        self._grants[c.id] = Grant.make(self.device, c.id, args.order_seq, expiry)

    # ------------------------------------------------------------------ runtime hooks

    def snapshot(self) -> DriverSnapshot:
        return DriverSnapshot(compartments=[c.status() for c in self.compartments.values()])

    def metrics(self) -> dict[str, float]:
        m: dict[str, float] = {
            "compartments": float(len(self.compartments)),
            "boards_silent": float(len(self._silent_boards)),
            "board_faults": float(self.counters.board_faults),
            "polls": float(self.counters.polls),
            "reconnects": float(self.counters.reconnects),
            "code_ok": float(self.counters.code_ok),
            "code_wrong": float(self.counters.code_wrong),
            "code_refused": float(self.counters.code_refused),
            "code_alarms": float(self.counters.code_alarms),
            "dropoff_ok": float(self.counters.dropoff_ok),
            "state_save_errors": float(self.counters.state_save_errors),
        }
        if (bus := self._bus) is not None:
            s = bus.stats
            m |= {
                "poll_latency_ms": s.last_latency_s * 1000,
                "poll_latency_max_ms": s.max_latency_s * 1000,
                "poll_latency_avg_ms": s.latency_sum_s / s.answered * 1000 if s.answered else 0,
                "bus_timeouts": float(s.timeouts),
                "bus_retries": float(s.retries),
                "frame_errors": float(bus.parser.error_count),
            }
        return m

    def grant_for(self, compartment: str) -> Grant | None:
        """The pickup grant set for a compartment (tests and the simulator's shoppers)."""
        return self._grants.get(compartment)


class _CommandArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    compartment: str
    order_ref: str | None = Field(default=None, max_length=64)
    expiry: datetime | None = None
    order_seq: int | None = Field(default=None, ge=0)
    code_hash: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sent by older clouds; ignored"
    )
    out: bool = True


def load_key(env_name: str | None) -> PickupKey | None:
    return PickupKey.from_env(env_name) if env_name else None


def create_cu16(config: DeviceConfig) -> LockerDriver:
    options = Cu16Options.model_validate(config.options)
    return LockerDriver(config.id, options, load_key(options.codes_key_env))


CU16_DRIVER = DriverSpec(DeviceKind.LOCKER_BANK, create_cu16)
