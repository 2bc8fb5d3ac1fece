"""`sim-ble`: the real BLE scanner driver, fed by simulated shoppers instead of a radio.

Only the lowest level is simulated: the driver's scanners are `FakeBleakScanner`s on a
`SimulatedRadio`, which the store simulation feeds with bleak objects. Decoding, privacy,
presence and the watchdog are the production code. Time is simulated too: the driver's
clock is the simulation's, advanced `speed` times faster than real time (0: as fast as the
CPU allows).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from pydantic import BaseModel, ConfigDict, Field

from edge.ble.driver import BleScannerDriver
from edge.ble.options import (
    TRANSITION_GAP_S,
    AllowlistOptions,
    BleakOptions,
    PresenceOptions,
    ScannerOptions,
    WatchdogOptions,
)
from edge.ble.presence import epoch_wall_time
from simulators.ble.radio import RadioResetter, SimulatedRadio
from simulators.ble.world import (
    DEFAULT_APP_UUID,
    SIM_EPOCH,
    FloorPlan,
    RadioModel,
    StoreSimulation,
    default_floor_plan,
)


class SimBleOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 1
    shoppers: int = Field(default=5, ge=0, le=10_000)
    non_app: int = Field(default=3, ge=0, le=10_000, description="phones without the app")
    speed: float = Field(
        default=1.0, ge=0, description="simulated seconds per real second; 0 = max"
    )
    step_s: float = Field(default=0.1, gt=0, le=5)
    realtime: bool = Field(
        default=False,
        description="the simulated clock is the current Unix time (speed 1, no drift), so"
        " presence events carry the present time, as the cloud's offers require (they refuse"
        " events older than 2 min); false: a fixed epoch, reproducible runs",
    )
    repeat: bool = Field(default=True, description="send new shoppers when the store empties")
    app_uuid: uuid.UUID = DEFAULT_APP_UUID
    noise_db: float = Field(default=3.0, ge=0)
    drop_p: float = Field(default=0.1, ge=0, lt=1)
    presence: PresenceOptions = Field(default_factory=PresenceOptions)
    watchdog: WatchdogOptions = Field(default_factory=WatchdogOptions)
    flush_s: float = Field(default=1.0, gt=0)
    transition_gap_s: float | None = Field(default=TRANSITION_GAP_S, gt=0, le=10)


class SimBleDriver(BleScannerDriver):
    driver_name = "sim-ble"

    def __init__(self, device: str, options: SimBleOptions, plan: FloorPlan | None = None) -> None:
        self.sim_options = options
        self.plan = plan or default_floor_plan()
        self.radio = SimulatedRadio()
        self.sim = StoreSimulation(
            self.plan,
            seed=options.seed,
            radio=RadioModel(noise_db=options.noise_db, drop_p=options.drop_p),
            app_uuid=options.app_uuid,
            start=time.time() if options.realtime else SIM_EPOCH,
        )
        self.sim.add_random_shoppers(options.shoppers, non_app=options.non_app)
        bleak_options = BleakOptions(
            scanners=[ScannerOptions(adapter=s.adapter, zone=s.zone) for s in self.plan.scanners],
            allowlist=AllowlistOptions(app_uuids=[options.app_uuid]),
            presence=options.presence,
            watchdog=options.watchdog,
            flush_s=options.flush_s,
            transition_gap_s=options.transition_gap_s,
        )
        super().__init__(
            device,
            bleak_options,
            scanner_class=self.radio.scanner_class(),
            resetter=RadioResetter(self.radio),
            clock=self.sim.clock,
            wall_time=epoch_wall_time,
        )

    async def _loop(self) -> None:
        opts = self.sim_options
        flush_s, check_s = self.options.flush_s, self.options.watchdog.check_s
        next_flush = self.sim.now + flush_s
        next_check = self.sim.now + check_s
        while True:
            # realtime: catch up with the wall clock, so a slow step never makes events late
            until = max(time.time(), self.sim.now) if opts.realtime else self.sim.now + opts.step_s
            self.sim.run_until(until, self.radio.transmit)
            if self.sim.now >= next_flush:
                next_flush += flush_s
                self.flush()
            else:
                self.flush_if_transition_due(self.sim.now)
            if self.sim.now >= next_check:
                next_check += check_s
                await self.check_watchdogs(self.sim.now)
            if opts.repeat and self.sim.now > self.sim.end:
                self.sim.prune_finished()
                self.sim.start = self.sim.now
                self.sim.add_random_shoppers(opts.shoppers, non_app=opts.non_app)
            if opts.realtime:
                # adverts may come from outside the simulation (a bench's phones): wake for
                # their transitions as the real driver does
                due = self._early_due
                await self._sleep(
                    opts.step_s if due is None else min(opts.step_s, due - self.sim.now)
                )
            else:
                await asyncio.sleep(opts.step_s / opts.speed if opts.speed > 0 else 0)
