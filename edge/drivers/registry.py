"""Which driver a config's `driver:` name means, found without importing the others.

Two sources, both lazy (a module is imported only when a config names one of its drivers):

- the built-in drivers below, the real devices this package talks to;
- the `storegate.drivers` entry points of installed distributions, each naming a
  `DriverSpec` as `module:attribute`. The simulated devices (`sim-*`) come this way from
  the `simulators` package, so `edge/` never imports a simulator.

An entry point cannot replace a built-in driver: it is ignored with a warning.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import EntryPoint, entry_points

from edge.drivers.base import DeviceConfig, Driver, DriverSpec
from protocols.messages import DeviceKind

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "storegate.drivers"

# name -> "module:attribute" of its DriverSpec
BUILTIN_DRIVERS: dict[str, str] = {
    "llrp": "edge.rfid.driver:LLRP_DRIVER",
    "impinj-iot": "edge.rfid.impinj:IMPINJ_IOT_DRIVER",
    "zebra-iot": "edge.rfid.zebra:ZEBRA_IOT_DRIVER",
    "cu16": "edge.locker.driver:CU16_DRIVER",
    "bleak": "edge.ble.driver:BLEAK_DRIVER",
}

SIMULATED_PREFIX = "sim-"
SIMULATORS_HINT = (
    "the sim-* drivers are installed by the storegate package's simulators (entry point"
    f" group {ENTRY_POINT_GROUP!r}): install it with its simulators, e.g."
    " pip install 'storegate[sim]' (in a checkout, scripts/bootstrap reinstalls it)"
)


class DriverLookupError(ValueError):
    """A config names a driver that is not installed, or whose module cannot be loaded."""


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name in BUILTIN_DRIVERS:
            log.warning(
                "driver entry point %s = %s ignored: %r is a built-in driver",
                point.name,
                point.value,
                point.name,
            )
            continue
        same = found.setdefault(point.name, [])
        if all(other.value != point.value for other in same):
            same.append(point)
    return found


def installed_driver_names() -> list[str]:
    """Every driver name a config may use, without importing any driver module."""
    return sorted({*BUILTIN_DRIVERS, *_entry_points()})


def _load_target(target: str) -> object:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def driver_spec(name: str) -> DriverSpec:
    """The spec of driver `name`, importing only the module that defines it."""
    if name in BUILTIN_DRIVERS:
        target = BUILTIN_DRIVERS[name]
        # A built-in module that fails to import is a broken install: raise it as it is.
        spec = _load_target(target)
    else:
        points = _entry_points().get(name, [])
        if not points:
            known = ", ".join(installed_driver_names()) or "none"
            hint = f"; {SIMULATORS_HINT}" if name.startswith(SIMULATED_PREFIX) else ""
            raise DriverLookupError(f"unknown driver {name!r} (installed: {known}){hint}")
        if len(points) > 1:
            # Two distributions claim one name: which one a config gets must not be luck.
            targets = " and ".join(point.value for point in points)
            raise DriverLookupError(f"driver {name!r} is declared twice ({targets})")
        point = points[0]
        target = point.value
        try:
            spec = point.load()
        except ImportError as exc:
            hint = f"; {SIMULATORS_HINT}" if name.startswith(SIMULATED_PREFIX) else ""
            raise DriverLookupError(
                f"driver {name!r} ({target}) cannot be loaded: {exc}{hint}"
            ) from exc
    if not isinstance(spec, DriverSpec):
        raise DriverLookupError(f"driver {name!r}: {target} is not a DriverSpec")
    return spec


def driver_names() -> dict[str, DeviceKind]:
    """Every installed driver with its device kind (imports every driver module)."""
    return {name: driver_spec(name).kind for name in installed_driver_names()}


def create_driver(config: DeviceConfig) -> Driver:
    """The driver for one `devices:` entry; ValueError names the problem (a factory's
    names the bad option)."""
    spec = driver_spec(config.driver)
    if spec.kind is not config.kind:
        raise ValueError(f"driver {config.driver!r} is for {spec.kind}, not {config.kind}")
    return spec.factory(config)
