"""`sim-cu16`: the production locker driver, talking byte for byte to the CU16 simulator."""

from __future__ import annotations

from pathlib import Path

from edge.drivers.base import DeviceConfig, DriverContext, DriverSpec
from edge.locker.driver import LockerBankOptions, LockerDriver, load_key
from edge.locker.transport import TransportUrl
from protocols.messages import DeviceKind
from protocols.pickup import PickupKey
from simulators.locker.board import LockerBank
from simulators.locker.server import LockerSimulator


class SimCu16Options(LockerBankOptions):
    spring_doors: bool = True


class SimLockerDriver(LockerDriver):
    """The simulated bank as just another driver: the simulator runs in-process on a real
    pty (plus a keypad pty), and the production driver talks to it byte for byte."""

    driver_name = "sim-cu16"

    def __init__(self, device: str, options: SimCu16Options, key: PickupKey | None) -> None:
        # The simulated bank has no real key to protect; a fresh random one stands in.
        super().__init__(device, options, key or PickupKey.generate())
        self.bank = LockerBank(
            options.boards,
            options.locks_per_board,
            polarity=options.polarity,
            unlock_answers=options.unlock_answers,
            spring_doors=options.spring_doors,
        )

    def use_state_dir(self, directory: Path) -> None:
        """Nothing to keep by default: each run starts a fresh simulated bank (empty
        compartments) with a fresh key, so holds from an earlier run would be lies.
        An explicit `state_path` still works (restart tests)."""
        return

    @property
    def key(self) -> PickupKey:
        """The simulated bank's key: its simulated shoppers derive their codes with it."""
        assert self._key is not None
        return self._key

    async def run(self, ctx: DriverContext) -> None:
        self.simulator = LockerSimulator(self.bank)
        path = await self.simulator.start_pty()
        self._transport = TransportUrl("pty", path=path)
        self._keypad = TransportUrl("pty", path=self.simulator.keypad_path)
        try:
            await super().run(ctx)
        finally:
            await self.simulator.close()


def create_sim_cu16(config: DeviceConfig) -> SimLockerDriver:
    options = SimCu16Options.model_validate(config.options)
    return SimLockerDriver(config.id, options, load_key(options.codes_key_env))


SIM_CU16_DRIVER = DriverSpec(DeviceKind.LOCKER_BANK, create_sim_cu16)
