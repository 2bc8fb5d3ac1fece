"""`sim-ble`: the production BLE scanner driver on a simulated radio (simulators/ble)."""

from __future__ import annotations

from edge.ble.driver import device_options
from edge.drivers.base import DeviceConfig, Driver, DriverSpec
from protocols.messages import DeviceKind
from simulators.ble.driver import SimBleDriver, SimBleOptions


def create_sim_ble(config: DeviceConfig) -> Driver:
    return SimBleDriver(config.id, device_options(config, SimBleOptions))


SIM_BLE_DRIVER = DriverSpec(DeviceKind.BLE_SCANNER, create_sim_ble)
