"""The production `bleak` driver with the real `bleak.BleakScanner`, against the BlueZ
simulator (simulators/ble/bluez.py) in another process on a private dbus-daemon.

Nothing in the edge is replaced: bleak talks D-Bus to `org.bluez` as on a Pi. Timings are
shortened through the options; asserts are about what happened, never how fast.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bleak import BleakScanner
from bleak.exc import BleakError
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from edge.ble.driver import BleScannerDriver
from edge.ble.options import BleakOptions
from protocols.ids import contains_mac_address
from protocols.messages import DriverState, PresenceKind
from simulators.ble.adverts import APPLE, ibeacon_payload
from simulators.ble.bluez import (
    BusDaemon,
    RunningSimulator,
    SimulatorControl,
    start_simulator,
)
from simulators.ble.world import DEFAULT_APP_UUID, default_floor_plan
from tests.ble.conftest import RecordingContext

TIMEOUT = 15.0
ZONES = {s.adapter: s.zone for s in default_floor_plan().scanners}


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(poll(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


async def wait_for_stats(
    control: SimulatorControl, condition: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            stats = await control.stats()
            if condition(stats):
                return stats
            await asyncio.sleep(0.05)


class Simulators:
    """Starts simulators for a test and stops them after it, once its event loop is closed
    (bleak's connection then never sees its bus vanish mid-loop)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.started: list[RunningSimulator | BusDaemon] = []

    def start(self, **kwargs: Any) -> RunningSimulator:
        sim = start_simulator(**kwargs)
        self.started.append(sim)
        # bleak's BlueZ backend connects to the system bus: this is how it finds our BlueZ
        self.monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", sim.address)
        return sim

    def bus(self) -> BusDaemon:
        bus = BusDaemon.start()
        self.started.append(bus)
        self.monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        return bus

    def stop(self) -> None:
        for item in reversed(self.started):
            item.stop()


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch) -> Iterator[Simulators]:
    started = Simulators(monkeypatch)
    yield started
    started.stop()


@pytest.fixture
async def control_of() -> AsyncIterator[Callable[[RunningSimulator], Any]]:
    opened: list[SimulatorControl] = []

    async def connect(sim: RunningSimulator) -> SimulatorControl:
        control = await SimulatorControl.connect(sim.address)
        opened.append(control)
        return control

    yield connect
    for control in opened:
        control.close()


@pytest.fixture
def quiet_world(sims: Simulators) -> RunningSimulator:
    """No shoppers: only the adverts a test injects."""
    return sims.start(shoppers=0, non_app=0, beacons=0)


class PowerCycle:
    """An AdapterResetter that power-cycles over D-Bus (Adapter1.Powered), as
    `bluetoothctl power off/on` does; the edge's default uses btmgmt."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls = 0

    async def reset(self, adapter: str) -> None:
        self.calls += 1
        bus = await MessageBus(bus_address=self.address).connect()
        try:
            for value in (False, True):
                reply = await bus.call(set_powered(adapter, value))
                assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        finally:
            bus.disconnect()


def set_powered(adapter: str, value: bool) -> Message:
    return Message(
        destination="org.bluez",
        path=f"/org/bluez/{adapter}",
        interface="org.freedesktop.DBus.Properties",
        member="Set",
        signature="ssv",
        body=["org.bluez.Adapter1", "Powered", Variant("b", value)],
    )


def adapter_call(adapter: str, member: str, signature: str = "", body: Any = None) -> Message:
    return Message(
        destination="org.bluez",
        path=f"/org/bluez/{adapter}",
        interface="org.bluez.Adapter1",
        member=member,
        signature=signature,
        body=body or [],
    )


def driver_options(adapters: list[str], **overrides: object) -> BleakOptions:
    base: dict[str, object] = {
        "scanners": [{"adapter": a, "zone": ZONES[a]} for a in adapters],
        "allowlist": {"app_uuids": [str(DEFAULT_APP_UUID)]},
        "watchdog": {"silence_s": 1.0, "check_s": 0.05, "start_timeout_s": 5.0},
        "flush_s": 0.1,
    }
    return BleakOptions.model_validate(base | overrides)


class Running:
    def __init__(self, driver: BleScannerDriver, ctx: RecordingContext) -> None:
        self.driver, self.ctx = driver, ctx
        self.task = asyncio.create_task(driver.run(ctx))

    async def started(self) -> None:
        await wait_for(lambda: self.ctx.state is DriverState.RUNNING or self.task.done(), "start")
        if self.task.done():
            self.task.result()  # say why it did not start

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


# --------------------------------------------------------------------------- end to end


async def test_real_bleak_scanner_turns_simulated_shoppers_into_presence(
    sims: Simulators, ctx: RecordingContext, control_of: Any
) -> None:
    sim = sims.start(shoppers=3, non_app=3, speed=10, arrive_within_s=0)
    control: SimulatorControl = await control_of(sim)
    adapters = sorted(ZONES)
    driver = BleScannerDriver("ble-1", driver_options(adapters), resetter=PowerCycle(sim.address))
    running = Running(driver, ctx)
    await running.started()
    stats = await control.stats()
    assert all(stats[a]["discovering"] and stats[a]["sessions"] == 1 for a in adapters)
    await wait_for(
        lambda: any(e.kind is PresenceKind.ENTER for e in ctx.events()), "an enter event"
    )
    truth = await control.truth()
    await running.stop()

    events = ctx.events()
    app_ids = set(truth["app_beacon_ids"])
    assert {e.beacon for e in events} <= app_ids, "only the app's phones are published"
    assert {e.zone for e in events} <= set(ZONES.values())
    metrics = driver.metrics()
    assert metrics["adverts_total"] > 0
    assert metrics["not_allowlisted_total"] > 0, "the other phones were heard and dropped"
    for payload in ctx.payloads:
        assert not contains_mac_address(payload.decode()), payload[:200]
    # the driver stopped its discovery sessions on the way out
    stats = await control.stats()
    assert all(not s["discovering"] and s["sessions"] == 0 for s in stats.values())
    assert all(s["discovery_starts"] == 1 == s["discovery_stops"] for s in stats.values())


async def test_passive_mode_registers_a_monitor_and_gets_only_matching_adverts(
    sims: Simulators, ctx: RecordingContext, control_of: Any
) -> None:
    sim = sims.start(shoppers=2, non_app=3, speed=10, arrive_within_s=0)
    control: SimulatorControl = await control_of(sim)
    driver = BleScannerDriver(
        "ble-1", driver_options(["hci0"], mode="passive"), resetter=PowerCycle(sim.address)
    )
    running = Running(driver, ctx)
    await running.started()
    # bluetoothd activates the monitor once it has read the client's Patterns
    stats = await wait_for_stats(control, lambda s: s["hci0"]["monitors"] == 1, "monitor active")
    assert not stats["hci0"]["discovering"], "passive: no discovery session"
    await wait_for(lambda: driver.metrics()["adverts_total"] > 0, "a matching advert")
    stats = await wait_for_stats(
        control, lambda s: s["hci0"]["dropped_filtered"] > 0, "junk filtered"
    )
    await running.stop()
    # only the app's iBeacons matched the patterns; the others never reached bleak
    assert driver.metrics().get("not_allowlisted_total", 0) == 0
    stats = await control.stats()
    assert stats["hci0"]["monitors"] == 0, "unregistered on the way out"


# --------------------------------------------------------------------------- strictness


async def test_bluez_answers_as_strictly_as_bluetoothd(
    quiet_world: RunningSimulator, control_of: Any
) -> None:
    bus = await MessageBus(bus_address=quiet_world.address).connect()
    other = await MessageBus(bus_address=quiet_world.address).connect()
    control: SimulatorControl = await control_of(quiet_world)
    try:
        reply = await bus.call(adapter_call("hci0", "StopDiscovery"))
        assert (reply.error_name, reply.body) == (
            "org.bluez.Error.Failed",
            ["No discovery started"],
        )
        assert (await bus.call(adapter_call("hci0", "StartDiscovery"))).error_name is None
        reply = await bus.call(adapter_call("hci0", "StartDiscovery"))
        assert reply.error_name == "org.bluez.Error.InProgress"
        # another client has a session of its own
        assert (await other.call(adapter_call("hci0", "StartDiscovery"))).error_name is None
        assert (await control.stats())["hci0"]["sessions"] == 2

        for bad in (
            {"Colour": Variant("s", "red")},
            {"RSSI": Variant("n", -80), "Pathloss": Variant("q", 10)},
            {"RSSI": Variant("s", "-80")},
            {"Transport": Variant("s", "radio")},
        ):
            reply = await bus.call(adapter_call("hci0", "SetDiscoveryFilter", "a{sv}", [bad]))
            assert reply.error_name == "org.bluez.Error.InvalidArguments", bad

        # a client that leaves the bus loses its session, as bluetoothd watches its clients
        other.disconnect()
        await wait_for_stats(control, lambda s: s["hci0"]["sessions"] == 1, "session dropped")

        # powered off: every session ends, and discovery is refused until powered on
        assert (await bus.call(set_powered("hci0", False))).error_name is None
        reply = await bus.call(adapter_call("hci0", "StartDiscovery"))
        assert reply.error_name == "org.bluez.Error.NotReady"
        stats = await control.stats()
        assert (stats["hci0"]["sessions"], stats["hci0"]["discovering"]) == (0, False)
        assert (await bus.call(set_powered("hci0", True))).error_name is None

        # Discovering is read-only, like bluetoothd's
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/org/bluez/hci0",
                interface="org.freedesktop.DBus.Properties",
                member="Set",
                signature="ssv",
                body=["org.bluez.Adapter1", "Discovering", Variant("b", True)],
            )
        )
        assert reply.message_type is MessageType.ERROR
    finally:
        bus.disconnect()


async def test_unknown_adapter_has_no_object(quiet_world: RunningSimulator) -> None:
    scanner = BleakScanner(bluez={"adapter": "hci9"})
    with pytest.raises(BleakError, match="adapter 'hci9' not found"):
        await scanner.start()
    bus = await MessageBus(bus_address=quiet_world.address).connect()
    try:
        reply = await bus.call(adapter_call("hci9", "StartDiscovery"))
        assert reply.message_type is MessageType.ERROR
        assert reply.error_name == "org.freedesktop.DBus.Error.UnknownMethod"
    finally:
        bus.disconnect()


async def test_rssi_is_signalled_per_advert_only_with_a_filter(
    quiet_world: RunningSimulator, control_of: Any
) -> None:
    """bluetoothd signals RSSI on every advert only while a client has a discovery filter;
    without one, only a change of at least 8 dB. The boundary: 7 dB is not, 8 dB is."""
    control: SimulatorControl = await control_of(quiet_world)
    bus = await MessageBus(bus_address=quiet_world.address).connect()
    frame = {APPLE: ibeacon_payload(uuid.UUID(int=1), 1, 2, -59)}
    try:
        assert not await control.advertise("hci0", "6E:00:00:00:00:01", -60), "not scanning"
        assert (await bus.call(adapter_call("hci0", "StartDiscovery"))).error_name is None
        heard = [
            await control.advertise("hci0", "6E:00:00:00:00:01", rssi, manufacturer_data=frame)
            for rssi in (-60, -60, -67, -68, -61)
        ]
        # new device; the same; 7 dB and 8 dB from the last signalled -60; 7 dB from -68
        assert heard == [True, False, False, True, False]
        reply = await bus.call(
            adapter_call(
                "hci0", "SetDiscoveryFilter", "a{sv}", [{"DuplicateData": Variant("b", True)}]
            )
        )
        assert reply.error_name is None
        heard = [
            await control.advertise("hci0", "6E:00:00:00:00:01", rssi, manufacturer_data=frame)
            for rssi in (-60, -60, -61)
        ]
        assert heard == [True, True, True]
        # an RSSI filter drops weaker adverts before they become signals
        reply = await bus.call(
            adapter_call("hci0", "SetDiscoveryFilter", "a{sv}", [{"RSSI": Variant("n", -70)}])
        )
        assert reply.error_name is None
        assert await control.advertise("hci0", "6E:00:00:00:00:02", -70)
        assert not await control.advertise("hci0", "6E:00:00:00:00:03", -71)
    finally:
        bus.disconnect()


# --------------------------------------------------------------------------- faults


async def test_watchdog_restarts_the_scanner_of_a_silent_adapter(
    sims: Simulators, ctx: RecordingContext, control_of: Any
) -> None:
    # reference beacons at every zone centre keep healthy adapters busy (the docs' advice)
    sim = sims.start(shoppers=0, non_app=0, beacons=6, speed=5)
    control: SimulatorControl = await control_of(sim)
    resetter = PowerCycle(sim.address)
    driver = BleScannerDriver("ble-1", driver_options(["hci0", "hci1"]), resetter=resetter)
    running = Running(driver, ctx)
    await running.started()
    await wait_for(lambda: driver.metrics()["adverts_total"] > 20, "reference beacons")

    await control.go_silent("hci0", recovers_on="restart")
    await wait_for(lambda: driver.metrics()["watchdog_restarts_total"] == 1, "restart")
    await wait_for(lambda: ctx.state is DriverState.RUNNING, "recovered after restart")
    stats = await control.stats()
    assert stats["hci0"]["discovery_starts"] == 2, "hci0: stopped and started again"
    assert stats["hci1"]["discovery_starts"] == 1, "hci1 was healthy: left alone"
    assert resetter.calls == 0

    # a controller that only a power cycle revives: restart, then reset over D-Bus
    await control.go_silent("hci1", recovers_on="reset")
    await wait_for(lambda: driver.metrics()["adapter_resets_total"] == 1, "adapter reset")
    await wait_for(lambda: ctx.state is DriverState.RUNNING, "recovered after reset")
    stats = await control.stats()
    assert stats["hci1"]["power_cycles"] == 1
    assert stats["hci1"]["discovery_starts"] == 3, "start, restart, start after reset"
    assert not stats["hci1"]["silent"]
    reasons = [r for s, r in ctx.states if s is DriverState.DEGRADED and r]
    assert any("hci0" in r and "scanner restarted" in r for r in reasons), reasons
    assert any("hci1" in r and "adapter reset" in r for r in reasons), reasons
    await running.stop()


async def test_killed_bluez_is_a_scanner_failure_not_a_crash(
    sims: Simulators, ctx: RecordingContext
) -> None:
    """bluetoothd dies (SIGKILL) while the system bus lives on: the watchdog's restart fails
    with D-Bus's own words in the state reason, and the driver keeps running."""
    bus = sims.bus()
    sim = start_simulator(bus_address=bus.address, shoppers=0, non_app=0, beacons=6, speed=5)
    sims.started.append(sim)
    driver = BleScannerDriver("ble-1", driver_options(["hci0"]), resetter=PowerCycle(bus.address))
    running = Running(driver, ctx)
    await running.started()
    await wait_for(lambda: driver.metrics()["adverts_total"] > 5, "adverts")
    sim.kill()

    def degraded_reason() -> str | None:
        reasons = [r for s, r in ctx.states if s is DriverState.DEGRADED and r]
        return next((r for r in reasons if "org.bluez" in r), None)

    await wait_for(lambda: degraded_reason() is not None, "a degraded state naming org.bluez")
    assert not running.task.done(), "the driver is still running"
    reason = degraded_reason()
    assert reason is not None
    assert "hci0" in reason, reason
    assert "ServiceUnknown" in reason, reason
    await running.stop()


# --------------------------------------------------------------------------- command line


def run_module(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulators.ble.bluez", *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_command_line_runs_on_its_own_bus_and_cleans_up() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.ble.bluez", "--new-bus", "--shoppers", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # a hang here ends at pytest's timeout
        assert line.startswith("READY unix:path="), line
        address = line.split()[1]
        socket = Path(address.removeprefix("unix:path=").split(",")[0])
        assert socket.exists()
        ctl = run_module("ctl", "--bus", address, "silent", "hci2")
        assert ctl.returncode == 0, ctl.stderr
        stats = json.loads(run_module("ctl", "--bus", address, "stats").stdout)
        assert [name for name, s in stats.items() if s["silent"]] == ["hci2"]
        ctl = run_module("ctl", "--bus", address, "silent", "hci9")
        assert ctl.returncode == 1
        assert "no adapter 'hci9'" in ctl.stderr
    finally:
        process.terminate()
        assert process.wait(TIMEOUT) == 0
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
    assert not socket.parent.exists(), "its private bus went with it"


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--shoppers", "1"], "one of the arguments --bus --new-bus is required"),
        (["--new-bus", "--shoppers", "-1"], "--shoppers must be within 0..100000"),
        (["--new-bus", "--speed", "0"], "--speed must be > 0"),
        (["ctl", "--bus", "unix:path=/nonexistent/bus", "stats"], "cannot connect to the bus"),
    ],
)
def test_bad_command_lines_are_refused_with_a_reason(argv: list[str], reason: str) -> None:
    result = run_module(*argv)
    assert result.returncode in (1, 2)
    assert reason in result.stderr


def test_missing_dbus_daemon_is_a_clear_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="install the Debian package dbus-daemon"):
        BusDaemon.start()


async def test_unseen_devices_are_removed_after_the_temporary_timeout(
    sims: Simulators, control_of: Any
) -> None:
    sim = sims.start(shoppers=0, non_app=0, beacons=0, temporary_timeout_s=0.5)
    control: SimulatorControl = await control_of(sim)
    bus = await MessageBus(bus_address=sim.address).connect()
    removed: list[str] = []

    def on_signal(message: Message) -> None:
        if message.member == "InterfacesRemoved":
            removed.append(message.body[0])

    bus.add_message_handler(on_signal)
    try:
        reply = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=["type='signal',sender='org.bluez',member='InterfacesRemoved'"],
            )
        )
        assert reply.error_name is None
        assert (await bus.call(adapter_call("hci1", "StartDiscovery"))).error_name is None
        assert await control.advertise("hci1", "6E:00:00:00:00:09", -60)
        path = "/org/bluez/hci1/dev_6E_00_00_00_00_09"
        objects = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
        assert "org.bluez.Device1" in objects.body[0][path]
        await wait_for(lambda: removed == [path], "InterfacesRemoved of the device")
        stats = await control.stats()
        assert (stats["hci1"]["devices"], stats["hci1"]["devices_removed"]) == (0, 1)
    finally:
        bus.disconnect()
