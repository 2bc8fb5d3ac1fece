"""Device drivers behind one small interface; simulated devices are just other drivers,
installed from `simulators/` through the `storegate.drivers` entry points."""

from edge.drivers.base import (
    CommandOutcome,
    DeviceConfig,
    Driver,
    DriverContext,
    DriverFactory,
    DriverSnapshot,
    DriverSpec,
    Priority,
)
from edge.drivers.registry import (
    DriverLookupError,
    create_driver,
    driver_names,
    driver_spec,
    installed_driver_names,
)

__all__ = [
    "CommandOutcome",
    "DeviceConfig",
    "Driver",
    "DriverContext",
    "DriverFactory",
    "DriverLookupError",
    "DriverSnapshot",
    "DriverSpec",
    "Priority",
    "create_driver",
    "driver_names",
    "driver_spec",
    "installed_driver_names",
]
