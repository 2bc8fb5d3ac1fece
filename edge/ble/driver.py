"""The BLE scanner driver (`bleak`). Its simulated twin `sim-ble` (the same driver on a
simulated radio) lives in simulators/ble/driver.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TypeVar

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from pydantic import BaseModel, ValidationError

from edge.ble.options import BleakOptions
from edge.ble.pipeline import AdvertPipeline, Clock, system_clock, system_wall_time
from edge.ble.presence import PresenceEngine, WallTime
from edge.ble.scanner import (
    AdapterResetter,
    BtmgmtResetter,
    ManagedScanner,
    ScannerClass,
    WatchdogLevel,
    bleak_scanner_class,
)
from edge.drivers.base import (
    DeviceConfig,
    Driver,
    DriverContext,
    DriverSnapshot,
    DriverSpec,
    Priority,
)
from protocols.messages import BlePresence, DeviceKind, DriverState

log = logging.getLogger(__name__)

OptionsT = TypeVar("OptionsT", bound=BaseModel)

MAX_EVENTS_PER_MESSAGE = 5_000  # BlePresence.events max_length


class BleScannerDriver(Driver):
    kind = DeviceKind.BLE_SCANNER
    driver_name = "bleak"

    def __init__(
        self,
        device: str,
        options: BleakOptions,
        *,
        scanner_class: ScannerClass | None = None,
        resetter: AdapterResetter | None = None,
        clock: Clock = system_clock,
        wall_time: WallTime = system_wall_time,
    ) -> None:
        super().__init__(device)
        self.options = options
        self.clock = clock
        scanners = options.resolved_scanners()
        self.engine = PresenceEngine(
            {s.scanner_id: s.zone for s in scanners}, options.presence.params(), wall_time
        )
        self.pipeline = AdvertPipeline(options.allowlist.build(), self.engine, clock)
        self.scanners = [
            ManagedScanner(
                scanner_id=s.scanner_id,
                adapter=s.adapter,
                mode=options.mode,
                on_advert=self._on_advert,
                scanner_class=scanner_class or bleak_scanner_class(),
                resetter=resetter or BtmgmtResetter(),
                timings=options.watchdog.timings(),
                on_state=self._watchdog_changed,
            )
            for s in scanners
        ]
        self._by_id = {s.scanner_id: s for s in self.scanners}
        self._ctx: DriverContext | None = None
        self.messages_emitted = 0
        self.events_emitted = 0
        # Early flushes: a transition is what a shopper waits for (the offer follows the
        # enter), so it does not wait for the flush_s batch; the gap bounds how often.
        self.transition_gap_s = options.transition_gap_s
        self.early_flushes = 0
        self._early_due: float | None = None  # driver clock; set while a transition waits
        self._last_early = -math.inf
        self._wake = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    async def run(self, ctx: DriverContext) -> None:
        self._ctx = ctx
        ctx.set_state(DriverState.STARTING)
        try:
            now = self.clock()
            for scanner in self.scanners:
                await scanner.start(now)
            ctx.set_state(DriverState.RUNNING)
            await self._loop()
        finally:
            for scanner in self.scanners:
                await scanner.stop()
            self._flush_quietly()

    async def _loop(self) -> None:
        """Flush presence every `flush_s`, early when a transition waits, and run the
        watchdogs every `check_s` (real time)."""
        flush_s = self.options.flush_s
        check_s = self.options.watchdog.check_s
        now = self.clock()
        next_flush, next_check = now + flush_s, now + check_s
        while True:
            early = math.inf if self._early_due is None else self._early_due
            wake_at = min(next_flush, next_check, early)
            await self._sleep(wake_at - self.clock())
            now = self.clock()
            if now >= next_flush:
                next_flush = now + flush_s
                self.flush()
            else:
                self.flush_if_transition_due(now)
            if now >= next_check:
                next_check = now + check_s
                await self.check_watchdogs(now)

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake as soon as a transition asks for an early flush."""
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()

    # ------------------------------------------------------------------ work

    def _on_advert(self, scanner_id: str, device: BLEDevice, adv: AdvertisementData) -> None:
        try:
            self._by_id[scanner_id].saw_advert(self.clock())
            self.pipeline.handle(scanner_id, device, adv)
            if self.engine.transitions_pending:
                self._want_early_flush()
        except Exception:  # a bug must not kill bleak's callback dispatch; never log the device
            log.exception("scanner %s: advert handling failed", scanner_id)

    def _want_early_flush(self) -> None:
        # Only schedule here: the callback stays cheap (no outbox write inside bleak's
        # dispatch); the loop, woken, does the flush.
        if self.transition_gap_s is None or self._early_due is not None:
            return
        self._early_due = max(self.clock(), self._last_early + self.transition_gap_s)
        self._wake.set()

    def flush_if_transition_due(self, now: float) -> bool:
        """The early flush: at most one per `transition_gap_s`; it sends whatever is
        pending (dwells that happen to wait go along)."""
        if self._early_due is None or now < self._early_due:
            return False
        self._last_early = now
        self.early_flushes += 1
        self.flush()
        return True

    def flush(self) -> None:
        """Apply time-based presence rules and emit what happened as batched messages."""
        self.engine.tick(self.clock())
        events = self.engine.drain()
        self._early_due = None  # whatever waited goes out now
        if not events or self._ctx is None:
            return
        for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE):
            batch = events[start : start + MAX_EVENTS_PER_MESSAGE]
            self._ctx.emit(BlePresence, priority=Priority.EVENT, scanner=self.device, events=batch)
            self.messages_emitted += 1
            self.events_emitted += len(batch)

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception as error:  # shutting down: say so, do not mask the real exit reason
            log.warning("BLE %s: final presence flush failed: %s", self.device, error)

    async def check_watchdogs(self, now: float) -> None:
        for scanner in self.scanners:
            await scanner.check(now)

    def _watchdog_changed(self, _scanner: ManagedScanner) -> None:
        if self._ctx is None:
            return
        degraded = [s for s in self.scanners if s.level != WatchdogLevel.OK]
        if not degraded:
            self._ctx.set_state(DriverState.RUNNING)
            return
        reasons = []
        for s in degraded:
            action = "adapter reset" if s.level == WatchdogLevel.RESET else "scanner restarted"
            detail = f", last error: {s.last_error}" if s.last_error else ""
            reasons.append(f"{s.scanner_id} ({s.adapter}) silent; {action}{detail}")
        self._ctx.set_state(DriverState.DEGRADED, "; ".join(reasons))

    # ------------------------------------------------------------------ reporting

    def snapshot(self) -> DriverSnapshot:
        return DriverSnapshot(zones=self.engine.occupancy())

    def metrics(self) -> dict[str, float]:
        values = self.pipeline.metrics()
        values["watchdog_restarts_total"] = sum(s.restarts for s in self.scanners)
        values["adapter_resets_total"] = sum(s.adapter_resets for s in self.scanners)
        values["scanners_degraded"] = sum(s.level != WatchdogLevel.OK for s in self.scanners)
        values["presence_messages_total"] = self.messages_emitted
        values["presence_events_total"] = self.events_emitted
        values["presence_early_flushes_total"] = self.early_flushes
        return values


def device_options(config: DeviceConfig, model: type[OptionsT]) -> OptionsT:
    try:
        return model.model_validate(config.options)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'options'}: {e['msg']}" for e in error.errors()
        )
        raise ValueError(f"device {config.id}: bad {config.driver} options: {problems}") from None


def create_bleak(config: DeviceConfig) -> Driver:
    return BleScannerDriver(config.id, device_options(config, BleakOptions))


BLEAK_DRIVER = DriverSpec(DeviceKind.BLE_SCANNER, create_bleak)
