"""The built-in drivers: importing their modules registers them.

The list is fixed on purpose (no entry-point scanning on a store Pi). A module that does not
exist in this build is skipped; a module that exists but fails to import is a real error
and is raised, never swallowed.
"""

from __future__ import annotations

import importlib
import importlib.util

BUILTIN_DRIVER_MODULES = (
    "edge.drivers.sim",
    "edge.rfid.driver",
    "edge.rfid.impinj",
    "edge.rfid.zebra",
    "edge.locker.driver",
    "edge.ble.driver",
)


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package itself is missing
        return False


def load_builtin_drivers() -> list[str]:
    """Import every built-in driver module that exists; returns the ones imported."""
    loaded = []
    for module in BUILTIN_DRIVER_MODULES:
        if _exists(module):
            importlib.import_module(module)
            loaded.append(module)
    return loaded
