# ruff: noqa: N802  (the D-Bus API's method and property names are CamelCase)
"""A BlueZ stand-in on D-Bus, in its own process, so the real `bleak.BleakScanner` runs
unmodified against simulated shoppers.

Only the radio cannot exist on this machine, so this is the lowest level we can fake: the
`org.bluez` service on a private `dbus-daemon`, speaking exactly what bleak's BlueZ backend
uses (bleak/backends/bluezdbus/manager.py and scanner.py):

- `org.freedesktop.DBus.ObjectManager.GetManagedObjects` on `/`, `InterfacesAdded` and
  `InterfacesRemoved` (dbus_fast's service API emits them on export/unexport);
- `org.bluez.Adapter1` on `/org/bluez/hciN`: `Powered` (writable), `Discovering`, `Roles`,
  `SetDiscoveryFilter`, `StartDiscovery`, `StopDiscovery`, with one discovery session per
  D-Bus client as bluetoothd keeps them (a client that leaves the bus loses its session);
- `org.bluez.AdvertisementMonitorManager1` (passive scanning): `RegisterMonitor`, then the
  monitor's `Patterns` from the client's own `InterfacesAdded`, `Activate`, `DeviceFound`;
- `org.bluez.Device1` objects, one per (adapter, address): created with `InterfacesAdded` on
  the first advert, then `PropertiesChanged` (RSSI, ManufacturerData, ServiceData), and
  removed `temporary_timeout_s` (BlueZ's TemporaryTimeout, 30 s) after the last advert.

Where BlueZ is stricter than our code, so is this: `StartDiscovery` twice from one client
-> `org.bluez.Error.InProgress`; `StopDiscovery` without a session -> `org.bluez.Error.Failed`
("No discovery started"); either on an unpowered adapter -> `org.bluez.Error.NotReady`;
unknown filter keys or RSSI with Pathloss -> `org.bluez.Error.InvalidArguments`; an adapter
that does not exist has no object (bleak: "adapter 'hciN' not found"). RSSI is signalled
on every advert only while some client has a discovery filter (bleak always sets one in
active mode); otherwise only on a change of 8 dB or more, as bluetoothd's device_set_rssi().

Adverts come from the same simulated world as the `sim-ble` radio (simulators/ble/world.py:
shoppers' phones with the app's rotating iBeacon, other phones' junk) plus fixed
Eddystone-UID reference beacons at the zone centres. A control object on a second
connection (`org.storegate.BlueZSimulator`) injects faults ("adapter goes silent"), single
adverts, and reports counters and ground truth; `SimulatorControl` is its client.

Run: `python -m simulators.ble.bluez --new-bus --shoppers 5` prints `READY <bus address>`;
point the edge at it with `DBUS_SYSTEM_BUS_ADDRESS=<bus address>`; `python -m
simulators.ble.bluez ctl --bus <address> silent hci0` (or `stats`, `truth`) talks to it.
From Python (tests, bench): `start_simulator(shoppers=..., beacons=...)` returns the
address and a stop handle.
"""

# No `from __future__ import annotations`: dbus_fast reads a string annotation as a D-Bus
# signature, so the D-Bus members' annotations must stay real types.

import argparse
import array
import asyncio
import contextlib
import fcntl
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from dbus_fast import (
    BusType,
    DBusError,
    Message,
    MessageFlag,
    MessageType,
    PropertyAccess,
    RequestNameReply,
    Variant,
)
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt32,
)
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from simulators.ble.world import (
    DEFAULT_APP_UUID,
    FloorPlan,
    RadioModel,
    StoreSimulation,
    default_floor_plan,
)

BLUEZ = "org.bluez"
ADAPTER_IFACE = "org.bluez.Adapter1"
DEVICE_IFACE = "org.bluez.Device1"
MONITOR_MANAGER_IFACE = "org.bluez.AdvertisementMonitorManager1"
MONITOR_IFACE = "org.bluez.AdvertisementMonitor1"
CONTROL_NAME = "org.storegate.BlueZSimulator"
CONTROL_PATH = "/org/storegate/BlueZSimulator"
CONTROL_IFACE = "org.storegate.BlueZSimulator1"

RSSI_THRESHOLD_DB = 8  # bluetoothd's RSSI_THRESHOLD when no client has a discovery filter
MAX_DEVICES_PER_ADAPTER = 10_000  # more: the advert is dropped and counted
SEND_BUFFER_BYTES = 4 << 20  # kernel send buffer of our bus connection
# dbus_fast 5.2 drops its connection when a send would block (EAGAIN), so an advert is
# dropped and counted instead whenever this many bytes are still waiting to be sent
MAX_UNSENT_BYTES = SEND_BUFFER_BYTES // 4
EDDYSTONE_UUID = "0000feaa-0000-1000-8000-00805f9b34fb"
REFERENCE_NAMESPACE = bytes.fromhex("edd1ebeac04e5defa017")

Recovery = Literal["restart", "reset", "never"]
ManufacturerData = Annotated[dict[int, Variant], DBusSignature("a{qv}")]
ServiceData = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
StringList = Annotated[list[str], DBusSignature("as")]


def _error(name: str, text: str) -> DBusError:
    return DBusError(f"org.bluez.Error.{name}", text)


# --------------------------------------------------------------------------- private bus


@dataclass
class BusDaemon:
    """A private `dbus-daemon` that lets its clients own `org.bluez` (and nothing else)."""

    address: str
    process: subprocess.Popen[bytes]
    workdir: Path

    @classmethod
    def start(cls, timeout_s: float = 10.0) -> "BusDaemon":
        binary = shutil.which("dbus-daemon")
        if binary is None:
            raise RuntimeError(
                "dbus-daemon not found: install the Debian package dbus-daemon"
                " (scripts/bootstrap --with-system does, from scripts/debian-packages.txt)"
            )
        workdir = Path(tempfile.mkdtemp(prefix="bluez-sim-"))
        config = workdir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=workdir / "bus"))
        process = subprocess.Popen(
            [binary, f"--config-file={config}", "--nofork", "--nopidfile", "--print-address=1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        line = _read_line(process, timeout_s, "dbus-daemon")
        return cls(line.strip(), process, workdir)

    def stop(self) -> None:
        _terminate(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <deny own="*"/>
    <allow own="org.bluez"/>
    <allow own="org.storegate.BlueZSimulator"/>
  </policy>
</busconfig>
"""


def _read_line(process: subprocess.Popen[bytes], timeout_s: float, what: str) -> str:
    """The first stdout line of a child, or a clear error with its stderr."""
    assert process.stdout is not None
    os.set_blocking(process.stdout.fileno(), False)
    deadline = time.monotonic() + timeout_s
    buffer = b""
    while time.monotonic() < deadline:
        chunk = process.stdout.read()
        if chunk:
            buffer += chunk
            if b"\n" in buffer:
                os.set_blocking(process.stdout.fileno(), True)
                return buffer.split(b"\n", 1)[0].decode()
        if process.poll() is not None:
            break
        time.sleep(0.01)
    _terminate(process)
    stderr = process.stderr.read().decode(errors="replace")[-800:] if process.stderr else ""
    raise RuntimeError(f"{what} did not start within {timeout_s} s: {stderr.strip()}")


def _terminate(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# --------------------------------------------------------------------------- D-Bus objects


def _address_path(adapter: str, address: str) -> str:
    return f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"


def _variants(data: dict[Any, bytes]) -> dict[Any, Variant]:
    return {key: Variant("ay", value) for key, value in data.items()}


class Device(ServiceInterface):
    """One remote device as bluetoothd shows it after hearing it advertise."""

    def __init__(
        self,
        adapter: str,
        address: str,
        rssi: int,
        manufacturer_data: dict[int, bytes],
        service_data: dict[str, bytes],
        uuids: list[str],
    ) -> None:
        super().__init__(DEVICE_IFACE)
        self.adapter = adapter
        self.address = address
        self.path = _address_path(adapter, address)
        self.rssi = rssi
        self.manufacturer_data = manufacturer_data
        self.service_data = service_data
        self.uuids = uuids
        self.last_seen = time.monotonic()
        self.found_by: set[str] = set()  # monitors told about this device

    @dbus_property(PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        # phones use resolvable private addresses (top bits 01); beacons a static random one
        return "random"

    @dbus_property(PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        # no Name advertised: bluetoothd makes the alias from the address, bleak maps it to None
        return self.address.replace(":", "-")

    @dbus_property(PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return f"/org/bluez/{self.adapter}"

    @dbus_property(PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.rssi

    @dbus_property(PropertyAccess.READ)
    def ManufacturerData(self) -> ManufacturerData:
        return _variants(self.manufacturer_data)

    @dbus_property(PropertyAccess.READ)
    def ServiceData(self) -> ServiceData:
        return _variants(self.service_data)

    @dbus_property(PropertyAccess.READ)
    def UUIDs(self) -> StringList:
        return list(self.uuids)

    @dbus_property(PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Bonded(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Trusted(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Blocked(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def LegacyPairing(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return False

    def update(
        self,
        rssi: int,
        manufacturer_data: dict[int, bytes],
        service_data: dict[str, bytes],
        *,
        every_rssi: bool,
    ) -> bool:
        """Apply one advert; signal what changed. False if nothing was signalled."""
        self.last_seen = time.monotonic()
        changed: dict[str, Any] = {}
        if every_rssi or abs(rssi - self.rssi) >= RSSI_THRESHOLD_DB:
            # below the threshold bluetoothd keeps the old value: small steps add up
            changed["RSSI"] = self.rssi = rssi
        # bluetoothd merges new AD entries into the device's and signals only a change
        merged = self.manufacturer_data | manufacturer_data
        if merged != self.manufacturer_data:
            self.manufacturer_data = merged
            changed["ManufacturerData"] = _variants(merged)
        merged_sd = self.service_data | service_data
        if merged_sd != self.service_data:
            self.service_data = merged_sd
            changed["ServiceData"] = _variants(merged_sd)
        if changed:
            self.emit_properties_changed(changed)
        return bool(changed)

    def invalidate_rssi(self) -> None:
        # what bluetoothd does to every device when discovery stops
        self.emit_properties_changed({}, ["RSSI", "TxPower"])


@dataclass(frozen=True, slots=True)
class DiscoveryFilter:
    uuids: tuple[str, ...] = ()
    rssi: int | None = None
    pathloss: int | None = None
    transport: str = "auto"
    duplicate_data: bool = True
    empty: bool = True


_FILTER_KEYS = {
    "UUIDs": "as",
    "RSSI": "n",
    "Pathloss": "q",
    "Transport": "s",
    "DuplicateData": "b",
    "Discoverable": "b",
    "Pattern": "s",
}


def parse_filter(raw: dict[str, Variant]) -> DiscoveryFilter:
    """bluetoothd's parse_discovery_filter_dict: unknown keys or types are invalid."""
    for key, value in raw.items():
        expected = _FILTER_KEYS.get(key)
        if expected is None:
            raise _error("InvalidArguments", f"Invalid arguments in method call: {key}")
        if value.signature != expected:
            raise _error("InvalidArguments", f"Invalid arguments in method call: {key} type")
    values = {key: value.value for key, value in raw.items()}
    if "RSSI" in values and "Pathloss" in values:
        raise _error("InvalidArguments", "Invalid arguments in method call: RSSI and Pathloss")
    if "RSSI" in values and not -127 <= values["RSSI"] <= 20:
        raise _error("InvalidArguments", "Invalid arguments in method call: RSSI range")
    transport = values.get("Transport", "auto")
    if transport not in ("auto", "bredr", "le"):
        raise _error("InvalidArguments", "Invalid arguments in method call: Transport")
    return DiscoveryFilter(
        uuids=tuple(u.lower() for u in values.get("UUIDs", [])),
        rssi=values.get("RSSI"),
        pathloss=values.get("Pathloss"),
        transport=transport,
        duplicate_data=values.get("DuplicateData", True),
        empty=not raw,
    )


@dataclass(slots=True)
class Monitor:
    owner: str
    path: str
    patterns: list[tuple[int, int, bytes]] | None = None  # None until the client exported it
    active: bool = False

    def matches(self, ad_structures: list[tuple[int, bytes]]) -> bool:
        for start, ad_type, content in self.patterns or []:
            for kind, data in ad_structures:
                if kind == ad_type and data[start : start + len(content)] == content:
                    return True
        return False


def ad_structures(
    manufacturer_data: dict[int, bytes], service_data: dict[str, bytes]
) -> list[tuple[int, bytes]]:
    """The AD structures of an advert (type, data), as the controller received them."""
    out = [
        (0xFF, company.to_bytes(2, "little") + data) for company, data in manufacturer_data.items()
    ]
    for uuid, data in service_data.items():
        if uuid.endswith("-0000-1000-8000-00805f9b34fb") and uuid.startswith("0000"):
            out.append((0x16, int(uuid[4:8], 16).to_bytes(2, "little") + data))
    return out


@dataclass(slots=True)
class AdapterStats:
    adverts_offered: int = 0
    adverts_signalled: int = 0
    dropped_not_scanning: int = 0
    dropped_silent: int = 0
    dropped_filtered: int = 0
    dropped_full: int = 0
    dropped_backlog: int = 0
    discovery_starts: int = 0
    discovery_stops: int = 0
    power_cycles: int = 0
    devices_removed: int = 0


class Adapter(ServiceInterface):
    """org.bluez.Adapter1 of one simulated controller."""

    def __init__(self, sim: "BlueZSimulator", name: str, index: int) -> None:
        super().__init__(ADAPTER_IFACE)
        self.sim = sim
        self.hci = name
        self.path = f"/org/bluez/{name}"
        self.address = f"00:1A:7D:DA:71:{index:02X}"
        self.powered = True
        self.sessions: dict[str, DiscoveryFilter | None] = {}  # client -> its filter
        self.filters: dict[str, DiscoveryFilter] = {}  # set before or during a session
        self.devices: dict[str, Device] = {}
        self.monitors: dict[tuple[str, str], Monitor] = {}
        self.silent = False
        self.recovers_on: Recovery = "restart"
        self.stats = AdapterStats()

    # -- properties bleak reads

    @dbus_property(PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "public"

    @dbus_property(PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return f"storegate-sim-{self.hci}"

    @dbus_property(PropertyAccess.READ)
    def Alias(self) -> DBusStr:
        return f"storegate-sim-{self.hci}"

    @dbus_property(PropertyAccess.READ)
    def Class(self) -> DBusUInt32:
        return 0

    @dbus_property()
    def Powered(self) -> DBusBool:
        return self.powered

    @Powered.setter  # type: ignore[no-redef]
    def Powered(self, value: DBusBool) -> None:
        if value == self.powered:
            return
        self.powered = value
        if not value:
            # powering off ends every discovery session; a silent radio comes back on reset
            self.stats.power_cycles += 1
            was_discovering = self.discovering
            self.sessions.clear()
            if was_discovering:
                self._discovering_changed()
            if self.recovers_on == "reset":
                self.silent = False
        self.emit_properties_changed({"Powered": value})

    @dbus_property(PropertyAccess.READ)
    def Discoverable(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Pairable(self) -> DBusBool:
        return False

    @dbus_property(PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return self.discovering

    @dbus_property(PropertyAccess.READ)
    def UUIDs(self) -> StringList:
        return []

    @dbus_property(PropertyAccess.READ)
    def Roles(self) -> StringList:
        return ["central", "peripheral"]

    @property
    def discovering(self) -> bool:
        return bool(self.sessions)

    def _discovering_changed(self) -> None:
        self.emit_properties_changed({"Discovering": self.discovering})
        if not self.discovering:
            for device in self.devices.values():
                device.invalidate_rssi()

    # -- methods

    @dbus_method()
    def SetDiscoveryFilter(self, properties: DBusDict) -> None:
        client = self.sim.caller
        if not self.powered:
            raise _error("NotReady", "Resource Not Ready")
        parsed = parse_filter(properties)
        if parsed.empty:
            self.filters.pop(client, None)
        else:
            self.filters[client] = parsed
        if client in self.sessions:
            self.sessions[client] = self.filters.get(client)

    @dbus_method()
    def StartDiscovery(self) -> None:
        client = self.sim.caller
        if not self.powered:
            raise _error("NotReady", "Resource Not Ready")
        if client in self.sessions:
            # bluetoothd: every client can only start one discovery
            raise _error("InProgress", "Operation already in progress")
        was_discovering = self.discovering
        self.sessions[client] = self.filters.get(client)
        self.stats.discovery_starts += 1
        if self.silent and self.recovers_on == "restart":
            self.silent = False
        if not was_discovering:
            self._discovering_changed()

    @dbus_method()
    def StopDiscovery(self) -> None:
        client = self.sim.caller
        if not self.powered:
            raise _error("NotReady", "Resource Not Ready")
        if client not in self.sessions:
            raise _error("Failed", "No discovery started")
        del self.sessions[client]
        self.stats.discovery_stops += 1
        if not self.discovering:
            self._discovering_changed()

    @dbus_method()
    def RemoveDevice(self, device: DBusObjectPath) -> None:
        for address, known in list(self.devices.items()):
            if known.path == device:
                self.remove_device(address)
                return
        raise _error("DoesNotExist", "Does Not Exist")

    # -- called by the simulator

    def client_left(self, client: str) -> None:
        """bluetoothd watches its clients: one that leaves the bus loses its session."""
        self.filters.pop(client, None)
        if self.sessions.pop(client, "absent") != "absent" and not self.discovering:
            self._discovering_changed()
        for key in [k for k in self.monitors if k[0] == client]:
            del self.monitors[key]

    def remove_device(self, address: str) -> None:
        device = self.devices.pop(address, None)
        if device is not None:
            self.sim.bluez_bus.unexport(device.path)
            self.stats.devices_removed += 1

    def hear(
        self,
        address: str,
        rssi: int,
        manufacturer_data: dict[int, bytes],
        service_data: dict[str, bytes],
        uuids: Sequence[str] = (),
    ) -> bool:
        """One advert received by this controller; True if bleak was told about it."""
        self.stats.adverts_offered += 1
        monitors = [m for m in self.monitors.values() if m.active]
        if not self.powered or not (self.sessions or monitors):
            self.stats.dropped_not_scanning += 1
            return False
        if self.silent:
            self.stats.dropped_silent += 1
            return False
        structures = ad_structures(manufacturer_data, service_data)
        filters = [f for f in self.sessions.values() if f is not None]
        if not self._accepted(rssi, uuids, filters, structures, monitors):
            self.stats.dropped_filtered += 1
            return False
        if self.sim.backlog() > MAX_UNSENT_BYTES:
            self.stats.dropped_backlog += 1
            return False
        device = self.devices.get(address)
        if device is None:
            if len(self.devices) >= MAX_DEVICES_PER_ADAPTER:
                self.stats.dropped_full += 1
                return False
            device = Device(
                self.hci, address, rssi, dict(manufacturer_data), dict(service_data), list(uuids)
            )
            self.devices[address] = device
            self.sim.bluez_bus.export(device.path, device)
            signalled = True
        else:
            every_rssi = any(f.duplicate_data for f in filters)
            signalled = device.update(rssi, manufacturer_data, service_data, every_rssi=every_rssi)
        for monitor in monitors:
            if monitor.path not in device.found_by and monitor.matches(structures):
                device.found_by.add(monitor.path)
                self.sim.call_client(monitor.owner, monitor.path, "DeviceFound", "o", [device.path])
        if signalled:
            self.stats.adverts_signalled += 1
        return signalled

    def _accepted(
        self,
        rssi: int,
        uuids: Sequence[str],
        filters: list[DiscoveryFilter],
        structures: list[tuple[int, bytes]],
        monitors: list[Monitor],
    ) -> bool:
        if self.sessions:
            # the merged filter: a client without a filter sees everything
            if len(filters) < len(self.sessions):
                return True
            return any(_passes(f, rssi, uuids) for f in filters)
        return any(m.matches(structures) for m in monitors)

    def expire(self, now: float, timeout_s: float) -> None:
        for address, device in list(self.devices.items()):
            if now - device.last_seen >= timeout_s:
                self.remove_device(address)


def _passes(f: DiscoveryFilter, rssi: int, uuids: Sequence[str]) -> bool:
    if f.transport == "bredr":
        return False
    if f.rssi is not None and rssi < f.rssi:
        return False
    return not f.uuids or bool(set(f.uuids) & {u.lower() for u in uuids})


class MonitorManager(ServiceInterface):
    """org.bluez.AdvertisementMonitorManager1 (passive scanning) of one adapter."""

    def __init__(self, adapter: Adapter) -> None:
        super().__init__(MONITOR_MANAGER_IFACE)
        self.adapter = adapter

    @dbus_method()
    def RegisterMonitor(self, application: DBusObjectPath) -> None:
        client = self.adapter.sim.caller
        key = (client, application)
        if key in self.adapter.monitors:
            raise _error("AlreadyExists", "Already Exists")
        # bluetoothd learns the monitor's Patterns from the client's own InterfacesAdded,
        # which follows our reply; the match goes out first on our connection, so the bus
        # applies it before the client can export
        self.adapter.monitors[key] = Monitor(client, application)
        self.adapter.sim.send_add_match(
            f"type='signal',sender='{client}',interface='org.freedesktop.DBus.ObjectManager',"
            f"member='InterfacesAdded',path_namespace='{application}'"
        )

    @dbus_method()
    def UnregisterMonitor(self, application: DBusObjectPath) -> None:
        key = (self.adapter.sim.caller, application)
        if self.adapter.monitors.pop(key, None) is None:
            raise _error("DoesNotExist", "Does Not Exist")

    @dbus_property(PropertyAccess.READ)
    def SupportedMonitorTypes(self) -> StringList:
        return ["or_patterns"]

    @dbus_property(PropertyAccess.READ)
    def SupportedFeatures(self) -> StringList:
        return []


class Control(ServiceInterface):
    """Test and bench hooks, on a connection of their own so `org.bluez` shows only BlueZ."""

    def __init__(self, sim: "BlueZSimulator") -> None:
        super().__init__(CONTROL_IFACE)
        self.sim = sim

    @dbus_method()
    def GoSilent(self, adapter: DBusStr, recovers_on: DBusStr) -> None:
        if recovers_on not in ("restart", "reset", "never"):
            raise DBusError(
                f"{CONTROL_IFACE}.Error", f"recovers_on {recovers_on!r}: restart|reset|never"
            )
        target = self.sim.adapter(adapter)
        target.silent, target.recovers_on = True, cast(Recovery, recovers_on)

    @dbus_method()
    def Advertise(
        self,
        adapter: DBusStr,
        address: DBusStr,
        rssi: DBusInt16,
        manufacturer_data: Annotated[dict[int, bytes], DBusSignature("a{qay}")],
        service_data: Annotated[dict[str, bytes], DBusSignature("a{say}")],
    ) -> DBusBool:
        return self.sim.adapter(adapter).hear(address, rssi, manufacturer_data, service_data)

    @dbus_method()
    def Stats(self) -> DBusStr:
        return json.dumps(self.sim.stats())

    @dbus_method()
    def Truth(self) -> DBusStr:
        return json.dumps(self.sim.truth())


# --------------------------------------------------------------------------- the simulator


@dataclass(slots=True)
class FixedBeacon:
    """An Eddystone-UID reference beacon, fixed at a zone centre."""

    instance: bytes
    address: str
    x: float
    y: float
    power_1m: int = -59
    interval_s: float = 1.0
    next_t: float = 0.0

    def service_data(self) -> dict[str, bytes]:
        tx_0m = self.power_1m + 41  # Eddystone calibrates at 0 m
        frame = b"\x00" + tx_0m.to_bytes(1, "big", signed=True) + REFERENCE_NAMESPACE
        return {EDDYSTONE_UUID: frame + self.instance + b"\x00\x00"}


@dataclass
class WorldOptions:
    shoppers: int = 5
    non_app: int = 3
    beacons: int = 0
    seed: int = 1
    speed: float = 1.0
    arrive_within_s: float = 60.0
    repeat: bool = True
    noise_db: float = 3.0
    drop_p: float = 0.1
    adapters: int | None = None  # default: one per zone of the floor plan


@dataclass
class BlueZSimulator:
    """The `org.bluez` service plus the world that feeds it, in one asyncio process."""

    address: str
    world: WorldOptions = field(default_factory=WorldOptions)
    plan: FloorPlan = field(default_factory=default_floor_plan)
    temporary_timeout_s: float = 30.0
    step_s: float = 0.05

    def __post_init__(self) -> None:
        self.caller = ""  # the unique name of the client whose method call is being served
        self.adapters: dict[str, Adapter] = {}
        self.beacons: list[FixedBeacon] = []
        self._bluez_bus: MessageBus | None = None
        self._control_bus: MessageBus | None = None
        self.sim: StoreSimulation | None = None
        self._t0 = self._epoch = 0.0

    @property
    def bluez_bus(self) -> MessageBus:
        assert self._bluez_bus is not None, "not started"
        return self._bluez_bus

    def adapter(self, name: str) -> Adapter:
        found = self.adapters.get(name)
        if found is None:
            raise DBusError(f"{CONTROL_IFACE}.Error", f"no adapter {name!r}")
        return found

    def backlog(self) -> int:
        """Bytes written to our bus connection that dbus-daemon has not read yet, plus
        dbus_fast's own queue (which it only uses once the socket was full)."""
        sock = getattr(self._bluez_bus, "_sock", None)
        writer = getattr(self._bluez_bus, "_writer", None)
        queued = len(getattr(writer, "messages", ())) * 1024
        if sock is None:
            return queued
        unsent = array.array("i", [0])
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, unsent)
        return unsent[0] + queued

    # -- lifecycle

    async def start(self) -> None:
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        self._bluez_bus = bus
        sock = getattr(bus, "_sock", None)
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        bus.add_message_handler(self._note_caller)
        count = self.world.adapters or len(self.plan.scanners)
        for index in range(count):
            adapter = Adapter(self, f"hci{index}", index)
            self.adapters[adapter.hci] = adapter
            bus.export(adapter.path, adapter)
            bus.export(adapter.path, MonitorManager(adapter))
        # bluetoothd drops the sessions of clients that leave the bus
        await self._add_match(
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
            "member='NameOwnerChanged'"
        )
        await self._request(bus, BLUEZ)
        control = await MessageBus(bus_address=self.address).connect()
        self._control_bus = control
        control.export(CONTROL_PATH, Control(self))
        await self._request(control, CONTROL_NAME)
        self._build_world()

    @staticmethod
    async def _request(bus: MessageBus, name: str) -> None:
        reply = await bus.request_name(name)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"could not own {name} on the bus: {reply.name}")

    def send_add_match(self, rule: str) -> None:
        self.bluez_bus.send(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )

    async def _add_match(self, rule: str) -> None:
        reply = await self.bluez_bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"AddMatch {rule} failed: {reply.error_name} {reply.body}")

    def stop(self) -> None:
        for bus in (self._control_bus, self._bluez_bus):
            if bus is not None:
                bus.disconnect()

    # -- bus plumbing

    def _note_caller(self, message: Message) -> bool:
        if message.message_type is MessageType.METHOD_CALL:
            # dbus_fast dispatches the call synchronously right after this handler
            self.caller = message.sender or ""
        elif message.message_type is MessageType.SIGNAL:
            if message.member == "NameOwnerChanged" and message.body[2] == "":
                for adapter in self.adapters.values():
                    adapter.client_left(message.body[0])
            elif message.member == "InterfacesAdded" and message.sender:
                self._monitor_exported(message.sender, message.body[0], message.body[1])
        return False

    def _monitor_exported(self, sender: str, path: str, interfaces: dict[str, Any]) -> None:
        props = interfaces.get(MONITOR_IFACE)
        if props is None:
            return
        for adapter in self.adapters.values():
            monitor = adapter.monitors.get((sender, path))
            if monitor is None or monitor.active:
                continue
            if props.get("Type", Variant("s", "")).value != "or_patterns":
                self.call_client(sender, path, "Release", "", [])
                adapter.monitors.pop((sender, path))
                continue
            monitor.patterns = [
                (int(start), int(kind), bytes(content))
                for start, kind, content in props["Patterns"].value
            ]
            monitor.active = True
            self.call_client(sender, path, "Activate", "", [])

    def call_client(
        self, owner: str, path: str, member: str, signature: str, body: list[Any]
    ) -> None:
        """A call to a client's monitor object; bluetoothd does not wait for the answer."""
        self.bluez_bus.send(
            Message(
                destination=owner,
                path=path,
                interface=MONITOR_IFACE,
                member=member,
                signature=signature,
                body=body,
                flags=MessageFlag.NO_REPLY_EXPECTED,
            )
        )

    # -- the world

    def _build_world(self) -> None:
        opts = self.world
        self._t0 = time.monotonic()
        self.sim = StoreSimulation(
            self.plan,
            seed=opts.seed,
            radio=RadioModel(noise_db=opts.noise_db, drop_p=opts.drop_p),
            app_uuid=DEFAULT_APP_UUID,
            start=time.time(),
        )
        self.sim.add_random_shoppers(
            opts.shoppers, non_app=opts.non_app, within_s=max(opts.arrive_within_s, 1e-3)
        )
        self._epoch = self.sim.start
        rng = random.Random(opts.seed)
        for i in range(opts.beacons):
            zone = self.plan.zones[i % len(self.plan.zones)]
            address = "C0:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(5))
            beacon = FixedBeacon(i.to_bytes(6, "big"), address, zone.x + 0.5, zone.y)
            beacon.next_t = self.sim.start + rng.uniform(0, beacon.interval_s)
            self.beacons.append(beacon)

    def sim_time(self) -> float:
        # from our own epoch: the world moves its `start` each time it sends new shoppers
        return self._epoch + (time.monotonic() - self._t0) * self.world.speed

    def _deliver(self, adapter: str, device: BLEDevice, adv: AdvertisementData) -> None:
        target = self.adapters.get(adapter)
        if target is not None:
            target.hear(device.address, adv.rssi, adv.manufacturer_data, adv.service_data)

    def _beacons_until(self, t: float) -> None:
        assert self.sim is not None
        for beacon in self.beacons:
            while beacon.next_t <= t:
                beacon.next_t += beacon.interval_s * self.sim.rng.uniform(0.95, 1.05)
                for scanner in self.plan.scanners:
                    target = self.adapters.get(scanner.adapter)
                    if target is None:
                        continue
                    distance = math.hypot(beacon.x - scanner.x, beacon.y - scanner.y)
                    rssi = self.sim.radio.rssi(beacon.power_1m, distance, self.sim.rng)
                    if rssi is not None:
                        target.hear(beacon.address, rssi, {}, beacon.service_data())

    async def run(self) -> None:
        assert self.sim is not None
        sim, opts = self.sim, self.world
        next_expiry = time.monotonic() + 1.0
        while True:
            t = self.sim_time()
            sim.run_until(t, self._deliver)
            self._beacons_until(t)
            if opts.repeat and sim.now > sim.end:
                sim.prune_finished()
                sim.start = sim.now
                sim.add_random_shoppers(
                    opts.shoppers, non_app=opts.non_app, within_s=max(opts.arrive_within_s, 1e-3)
                )
            now = time.monotonic()
            if now >= next_expiry:
                next_expiry = now + 1.0
                for adapter in self.adapters.values():
                    adapter.expire(now, self.temporary_timeout_s)
            await asyncio.sleep(self.step_s)

    # -- reports

    def stats(self) -> dict[str, Any]:
        return {
            name: {
                **asdict(a.stats),
                "powered": a.powered,
                "discovering": a.discovering,
                "sessions": len(a.sessions),
                "monitors": sum(m.active for m in a.monitors.values()),
                "devices": len(a.devices),
                "silent": a.silent,
            }
            for name, a in self.adapters.items()
        }

    def truth(self) -> dict[str, Any]:
        """Every app phone's published beacon id now, with the zone it really is in."""
        assert self.sim is not None
        t = self.sim_time()
        phones = [
            {"beacon": p.beacon_id(t), "zone": self.sim.true_zone(p, t)}
            for p in self.sim.phones
            if p.app
        ]
        ids = sorted(
            f"app:{token}" for p in self.sim.phones if p.app for _, _, token in p.identities
        )
        return {"phones": phones, "app_beacon_ids": ids, "sim_time": t}


# --------------------------------------------------------------------------- clients


class SimulatorControl:
    """A client of the simulator's control object (tests, bench)."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    @classmethod
    async def connect(cls, address: str) -> "SimulatorControl":
        try:
            return cls(await MessageBus(bus_address=address).connect())
        except OSError as error:
            raise RuntimeError(f"cannot connect to the bus at {address}: {error}") from None

    async def _call(self, member: str, signature: str = "", body: list[Any] | None = None) -> Any:
        reply = await self.bus.call(
            Message(
                destination=CONTROL_NAME,
                path=CONTROL_PATH,
                interface=CONTROL_IFACE,
                member=member,
                signature=signature,
                body=body or [],
            )
        )
        if reply.message_type is MessageType.ERROR:
            raise RuntimeError(f"simulator {member}: {reply.error_name}: {reply.body}")
        return reply.body[0] if reply.body else None

    async def go_silent(self, adapter: str, recovers_on: Recovery = "restart") -> None:
        await self._call("GoSilent", "ss", [adapter, recovers_on])

    async def advertise(
        self,
        adapter: str,
        address: str,
        rssi: int,
        *,
        manufacturer_data: dict[int, bytes] | None = None,
        service_data: dict[str, bytes] | None = None,
    ) -> bool:
        body = [adapter, address, rssi, manufacturer_data or {}, service_data or {}]
        return bool(await self._call("Advertise", "ssna{qay}a{say}", body))

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self._call("Stats"))
        return result

    async def truth(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self._call("Truth"))
        return result

    def close(self) -> None:
        self.bus.disconnect()


@dataclass
class RunningSimulator:
    """A simulator process on its own private bus; `stop()` ends both."""

    address: str
    process: subprocess.Popen[bytes]
    bus: BusDaemon | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def env(self) -> dict[str, str]:
        """What the edge's environment needs for bleak to find this BlueZ."""
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def kill(self) -> None:
        """SIGKILL the simulator (bluetoothd crashing); the bus stays up."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        _terminate(self.process)
        if self.bus is not None:
            self.bus.stop()

    def __enter__(self) -> "RunningSimulator":
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def start_simulator(
    *,
    shoppers: int = 5,
    non_app: int = 3,
    beacons: int = 0,
    seed: int = 1,
    speed: float = 1.0,
    arrive_within_s: float = 60.0,
    adapters: int | None = None,
    temporary_timeout_s: float = 30.0,
    bus_address: str | None = None,
    timeout_s: float = 20.0,
) -> RunningSimulator:
    """Start the simulator in a process of its own (on a new private bus unless one is
    given) and wait until it owns `org.bluez`."""
    bus = None if bus_address else BusDaemon.start()
    address = bus_address or (bus.address if bus else "")
    argv = [
        sys.executable,
        "-m",
        "simulators.ble.bluez",
        "--bus",
        address,
        "--shoppers",
        str(shoppers),
        "--non-app",
        str(non_app),
        "--beacons",
        str(beacons),
        "--seed",
        str(seed),
        "--speed",
        str(speed),
        "--arrive-within",
        str(arrive_within_s),
        "--temporary-timeout",
        str(temporary_timeout_s),
    ]
    if adapters is not None:
        argv += ["--adapters", str(adapters)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = _read_line(process, timeout_s, "the BlueZ simulator")
        if not line.startswith("READY "):
            raise RuntimeError(f"the BlueZ simulator said {line!r}, not READY")
    except BaseException:
        _terminate(process)
        if bus is not None:
            bus.stop()
        raise
    return RunningSimulator(address, process, bus)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.ble.bluez",
        description="BlueZ on a private D-Bus, fed by simulated shoppers; the real bleak"
        " scanner connects with DBUS_SYSTEM_BUS_ADDRESS set to the printed address.",
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--bus", help="the address of a running bus to serve on")
    where.add_argument("--new-bus", action="store_true", help="start a private dbus-daemon")
    parser.add_argument("--shoppers", type=int, default=5, help="phones with the app")
    parser.add_argument("--non-app", type=int, default=3, help="phones without the app")
    parser.add_argument("--beacons", type=int, default=0, help="fixed Eddystone-UID beacons")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated s per real s")
    parser.add_argument("--arrive-within", type=float, default=60.0, help="s (simulated)")
    parser.add_argument("--adapters", type=int, default=None, help="default: one per zone")
    parser.add_argument("--temporary-timeout", type=float, default=30.0, help="s")
    parser.add_argument("--no-repeat", action="store_true", help="no new shoppers")
    args = parser.parse_args(argv)
    for name in ("shoppers", "non_app", "beacons"):
        if not 0 <= getattr(args, name) <= 100_000:
            parser.error(f"--{name.replace('_', '-')} must be within 0..100000")
    if args.speed <= 0:
        parser.error("--speed must be > 0")
    if args.adapters is not None and not 1 <= args.adapters <= 100:
        parser.error("--adapters must be within 1..100")
    return args


async def serve(args: argparse.Namespace, address: str) -> None:
    simulator = BlueZSimulator(
        address,
        WorldOptions(
            shoppers=args.shoppers,
            non_app=args.non_app,
            beacons=args.beacons,
            seed=args.seed,
            speed=args.speed,
            arrive_within_s=args.arrive_within,
            repeat=not args.no_repeat,
            adapters=args.adapters,
        ),
        temporary_timeout_s=args.temporary_timeout,
    )
    await simulator.start()
    print(f"READY {address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = asyncio.create_task(simulator.run())
    stopper = asyncio.create_task(stop.wait())
    bus_gone = asyncio.create_task(simulator.bluez_bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    await asyncio.wait({runner, stopper, bus_gone}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    try:
        if runner.done():
            runner.result()  # the world loop failed: say why
        if bus_gone.done() and not stop.is_set():
            # bluetoothd without its bus has nothing left to serve
            error = None if bus_gone.cancelled() else bus_gone.exception()
            raise RuntimeError(f"the bus at {address} went away ({error!r})")
    finally:
        bus_gone.cancel()
        runner.cancel()
        simulator.stop()


@contextlib.contextmanager
def _bus_for(args: argparse.Namespace) -> Iterator[str]:
    if args.bus:
        yield args.bus
        return
    bus = BusDaemon.start()
    try:
        yield bus.address
    finally:
        bus.stop()


def parse_ctl_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators.ble.bluez ctl",
        description="Talk to a running simulator: faults and counters.",
    )
    parser.add_argument("--bus", required=True, help="the address printed after READY")
    actions = parser.add_subparsers(dest="action", required=True)
    silent = actions.add_parser("silent", help="the adapter stops hearing adverts")
    silent.add_argument("adapter", help="hci0, hci1, ...")
    silent.add_argument(
        "--recovers-on",
        choices=["restart", "reset", "never"],
        default="restart",
        help="what brings it back: a new StartDiscovery, a power cycle, or nothing",
    )
    actions.add_parser("stats", help="per-adapter counters as JSON")
    actions.add_parser("truth", help="the app phones' beacon ids and true zones as JSON")
    return parser.parse_args(argv)


async def ctl(args: argparse.Namespace) -> None:
    control = await SimulatorControl.connect(args.bus)
    try:
        if args.action == "silent":
            await control.go_silent(args.adapter, args.recovers_on)
        elif args.action == "stats":
            print(json.dumps(await control.stats(), indent=2))
        else:
            print(json.dumps(await control.truth(), indent=2))
    finally:
        control.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["ctl"]:
            asyncio.run(ctl(parse_ctl_args(argv[1:])))
            return 0
        args = parse_args(argv)
        with _bus_for(args) as address:
            asyncio.run(serve(args, address))
    except (RuntimeError, OSError) as error:
        print(f"bluez simulator: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
