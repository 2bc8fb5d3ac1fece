"""`sim-zebra-iot`: the production Zebra IoT Connector driver, subscribed to a simulated
connector that publishes to a real MQTT broker."""

from __future__ import annotations

import contextlib

from pydantic import Field

from edge.drivers.base import DeviceConfig, Driver, DriverContext, DriverSpec
from edge.rfid.zebra import ZebraIotDriver, ZebraIotOptions
from protocols.messages import DeviceKind
from protocols.mqtt import MqttSettings
from simulators.drivers.shelf_world import SimReaderOptions, simulated_world
from simulators.rfid_iot.zebra import SimulatedZebraConnector


class SimZebraIotOptions(SimReaderOptions):
    mqtt: MqttSettings = Field(
        default_factory=MqttSettings, description="a broker both sides reach (the node's own)"
    )
    batch_size: int = Field(default=1, ge=1, le=1_000, description="events per MQTT message")


class SimZebraIotDriver(ZebraIotDriver):
    """The same driver, subscribed to a simulated IoT Connector it starts itself, which
    publishes to a real broker (by default the node's own, 127.0.0.1:1883)."""

    driver_name = "sim-zebra-iot"

    def __init__(self, device: str, options: SimZebraIotOptions) -> None:
        world = simulated_world(options)
        data_topic = f"storegate-sim/zebra/{device}/data"
        management_topic = f"storegate-sim/zebra/{device}/mgmt"
        self.simulator = SimulatedZebraConnector(
            world,
            options.mqtt,
            data_topic=data_topic,
            management_topic=management_topic,
            cycle_s=options.cycle_s,
            batch_size=options.batch_size,
            client_id=f"storegate-sim-zebra-{device}",
        )
        super().__init__(
            device,
            ZebraIotOptions(
                mqtt=options.mqtt,
                data_topic=data_topic,
                management_topic=management_topic,
                antennas=world.shelves(),
                report_interval_s=options.report_interval_s,
                presence=options.presence,
            ),
        )

    async def run(self, ctx: DriverContext) -> None:
        self.simulator.start()
        try:
            await super().run(ctx)
        finally:
            with contextlib.suppress(Exception):
                await self.simulator.stop()


def _sim_factory(config: DeviceConfig) -> Driver:
    return SimZebraIotDriver(config.id, SimZebraIotOptions.model_validate(config.options))


SIM_ZEBRA_IOT_DRIVER = DriverSpec(DeviceKind.RFID_READER, _sim_factory)
