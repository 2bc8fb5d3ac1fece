"""Device drivers behind one small interface; simulated devices are just other drivers."""

from edge.drivers.base import (
    CommandOutcome,
    DeviceConfig,
    Driver,
    DriverContext,
    DriverFactory,
    DriverSnapshot,
    Priority,
    create_driver,
    driver_names,
    register_driver,
)

__all__ = [
    "CommandOutcome",
    "DeviceConfig",
    "Driver",
    "DriverContext",
    "DriverFactory",
    "DriverSnapshot",
    "Priority",
    "create_driver",
    "driver_names",
    "register_driver",
]
