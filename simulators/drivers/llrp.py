"""`sim-llrp`: the production LLRP driver, talking LLRP over TCP to a simulated reader."""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import Field

from edge.drivers.base import DeviceConfig, Driver, DriverContext, DriverSpec
from edge.rfid.driver import InventoryOptions, LlrpDriver, LlrpOptions
from protocols.messages import DeviceKind
from simulators.drivers.shelf_world import SimReaderOptions, simulated_world
from simulators.llrp.reader import SimulatedReader


class SimLlrpOptions(SimReaderOptions):
    """sim-llrp: the simulated reader's tag population."""

    inventory: dict[str, Any] = Field(
        default_factory=dict, description="as llrp's; cycle_ms defaults to the sim's cycle_s"
    )


class SimLlrpDriver(LlrpDriver):
    """The same driver, talking LLRP over TCP to a simulated reader it starts itself."""

    driver_name = "sim-llrp"

    def __init__(self, device: str, options: SimLlrpOptions) -> None:
        world = simulated_world(options)
        self.simulator = SimulatedReader(world, cycle_s=options.cycle_s)
        super().__init__(
            device,
            LlrpOptions(
                port=1,  # replaced by the simulator's port once it listens
                antennas=world.shelves(),
                report_interval_s=options.report_interval_s,
                presence=options.presence,
                inventory=InventoryOptions.model_validate(
                    {"cycle_ms": max(100, round(options.cycle_s * 1000)), **options.inventory}
                ),
            ),
        )

    async def run(self, ctx: DriverContext) -> None:
        await self.simulator.start()
        self.port = self.simulator.port
        try:
            await super().run(ctx)
        finally:
            with contextlib.suppress(Exception):
                await self.simulator.stop()


def _sim_factory(config: DeviceConfig) -> Driver:
    return SimLlrpDriver(config.id, SimLlrpOptions.model_validate(config.options))


SIM_LLRP_DRIVER = DriverSpec(DeviceKind.RFID_READER, _sim_factory)
