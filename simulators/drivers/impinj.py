"""`sim-impinj-iot`: the production Impinj IoT driver, over real HTTP to a simulated R700."""

from __future__ import annotations

import contextlib

from edge.drivers.base import DeviceConfig, Driver, DriverContext, DriverSpec
from edge.rfid.impinj import ImpinjIotDriver, ImpinjIotOptions
from protocols.messages import DeviceKind
from simulators.drivers.shelf_world import SimReaderOptions, simulated_world
from simulators.rfid_iot.impinj import SimulatedImpinjReader


class SimImpinjIotOptions(SimReaderOptions):
    """sim-impinj-iot: the simulated R700's tag population."""


class SimImpinjIotDriver(ImpinjIotDriver):
    """The same driver, over real HTTP to a simulated R700 it starts on a free port."""

    driver_name = "sim-impinj-iot"

    def __init__(self, device: str, options: SimImpinjIotOptions) -> None:
        world = simulated_world(options)
        self.simulator = SimulatedImpinjReader(world, cycle_s=options.cycle_s, credentials=None)
        super().__init__(
            device,
            ImpinjIotOptions(
                base_url="http://127.0.0.1:1",  # replaced once the simulator listens
                antennas=world.shelves(),
                username_env=None,
                report_interval_s=options.report_interval_s,
                presence=options.presence,
            ),
        )

    async def run(self, ctx: DriverContext) -> None:
        await self.simulator.start()
        self.base_url = self.simulator.url
        try:
            await super().run(ctx)
        finally:
            with contextlib.suppress(Exception):
                await self.simulator.stop()


def _sim_factory(config: DeviceConfig) -> Driver:
    return SimImpinjIotDriver(config.id, SimImpinjIotOptions.model_validate(config.options))


SIM_IMPINJ_IOT_DRIVER = DriverSpec(DeviceKind.RFID_READER, _sim_factory)
