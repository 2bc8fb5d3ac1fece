"""The scanner driver's lifecycle and watchdog, with fake BleakScanners on a simulated radio.

Timings are shortened through the options (silence 0.4 s instead of 90 s); the asserts are
about what happened and in which order, never about how fast.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest

from edge.ble.driver import BleScannerDriver
from edge.ble.options import BleakOptions
from protocols.messages import DriverState
from simulators.ble.adverts import APPLE, bluez_advert, ibeacon_payload
from simulators.ble.radio import RadioResetter, SimulatedRadio
from tests.ble.conftest import RecordingContext

APP = uuid.UUID("5f2dd896-b886-4549-ae01-e41acd7a354a")
TIMEOUT = 20.0


def options(**overrides: object) -> BleakOptions:
    base: dict[str, object] = {
        "adapter": "hci0",
        "zone": "entrance",
        "allowlist": {"app_uuids": [str(APP)]},
        "watchdog": {"silence_s": 0.4, "check_s": 0.05},
        "flush_s": 0.05,
    }
    return BleakOptions.model_validate(base | overrides)


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        # the driver has no hook to signal these conditions; a short poll is simplest
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


class FailingResetter:
    def __init__(self) -> None:
        self.calls = 0

    async def reset(self, adapter: str) -> None:
        self.calls += 1
        raise RuntimeError(f"btmgmt --index {adapter[3:]} power off failed (1): Not Powered")


class Harness:
    def __init__(self, radio: SimulatedRadio, driver: BleScannerDriver, ctx: RecordingContext):
        self.radio, self.driver, self.ctx = radio, driver, ctx
        self.sent = 0

    def advert(self) -> None:
        device, adv = bluez_advert(
            "hci0",
            "6E:11:22:33:44:55",
            -60,
            manufacturer_data={APPLE: ibeacon_payload(APP, 1, 2, -59)},
        )
        self.radio.transmit("hci0", device, adv)
        self.sent += 1


@pytest.fixture
async def harness(ctx: RecordingContext) -> AsyncIterator[Harness]:
    radio = SimulatedRadio()
    driver = BleScannerDriver(
        "ble-1", options(), scanner_class=radio.scanner_class(), resetter=RadioResetter(radio)
    )
    task = asyncio.create_task(driver.run(ctx))
    harness = Harness(radio, driver, ctx)
    await wait_for(lambda: ctx.state is DriverState.RUNNING, "driver running")
    yield harness
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert radio.adapter("hci0").scanners == [], "scanner stopped on the way out"


async def keep_advertising(harness: Harness) -> None:
    while True:
        harness.advert()
        await asyncio.sleep(0.02)


async def test_one_long_lived_scanner_while_adverts_flow(harness: Harness) -> None:
    feeder = asyncio.create_task(keep_advertising(harness))
    await wait_for(lambda: harness.ctx.events() != [], "an enter event")
    await asyncio.sleep(1.0)  # more than two silence periods
    feeder.cancel()
    # timing runs on the monotonic clock; event times are still wall-clock UTC
    enter = harness.ctx.events()[0]
    assert abs((datetime.now(UTC) - enter.at).total_seconds()) < 60
    state = harness.radio.adapter("hci0")
    assert (state.started, state.stopped) == (1, 0), "never restarted while healthy"
    metrics = harness.driver.metrics()
    assert metrics["watchdog_restarts_total"] == 0
    assert metrics["adverts_total"] >= 3
    assert metrics["adverts_per_s"] > 0
    assert [s for s, _ in harness.ctx.states] == [DriverState.STARTING, DriverState.RUNNING]


async def test_silent_scanner_is_restarted_and_recovers(harness: Harness) -> None:
    harness.radio.go_silent("hci0", recovers_on="restart")
    feeder = asyncio.create_task(keep_advertising(harness))
    try:
        await wait_for(lambda: harness.driver.metrics()["watchdog_restarts_total"] == 1, "restart")
        await wait_for(lambda: harness.ctx.state is DriverState.RUNNING, "recovered")
    finally:
        feeder.cancel()
    states = [s for s, _ in harness.ctx.states]
    assert states[-2:] == [DriverState.DEGRADED, DriverState.RUNNING]
    assert harness.radio.adapter("hci0").resets == 0
    assert harness.radio.adapter("hci0").started == 2


async def test_still_silent_after_restart_escalates_to_adapter_reset(harness: Harness) -> None:
    harness.radio.go_silent("hci0", recovers_on="reset")
    feeder = asyncio.create_task(keep_advertising(harness))
    try:
        await wait_for(lambda: harness.radio.adapter("hci0").resets == 1, "adapter reset")
        await wait_for(lambda: harness.ctx.state is DriverState.RUNNING, "recovered after reset")
    finally:
        feeder.cancel()
    metrics = harness.driver.metrics()
    assert metrics["watchdog_restarts_total"] == 1
    assert metrics["adapter_resets_total"] == 1
    reasons = [reason for state, reason in harness.ctx.states if state is DriverState.DEGRADED]
    assert reasons[0] is not None
    assert "scanner restarted" in reasons[0]
    assert reasons[-1] is not None
    assert "adapter reset" in reasons[-1]


async def test_failing_adapter_reset_is_reported_and_retried(ctx: RecordingContext) -> None:
    radio = SimulatedRadio()
    resetter = FailingResetter()
    driver = BleScannerDriver(
        "ble-1", options(), scanner_class=radio.scanner_class(), resetter=resetter
    )
    radio.go_silent("hci0", recovers_on="never")
    task = asyncio.create_task(driver.run(ctx))
    try:
        await wait_for(lambda: resetter.calls >= 2, "two reset attempts")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ctx.state is DriverState.DEGRADED
    last_reason = ctx.states[-1][1]
    assert last_reason is not None
    assert "Not Powered" in last_reason
    # the scanner never runs twice at once on the adapter (BlueZ would say InProgress)
    assert radio.adapter("hci0").scanners == []


async def test_passive_mode_passes_or_patterns(ctx: RecordingContext) -> None:
    radio = SimulatedRadio()
    driver = BleScannerDriver(
        "ble-1",
        options(mode="passive"),
        scanner_class=radio.scanner_class(),
        resetter=RadioResetter(radio),
    )
    task = asyncio.create_task(driver.run(ctx))
    await wait_for(lambda: ctx.state is DriverState.RUNNING, "running passive")
    [scanner] = radio.adapter("hci0").scanners
    assert scanner.scanning_mode == "passive"
    patterns = scanner.bluez.get("or_patterns") or []
    assert (0, 0xFF, b"\x4c\x00\x02\x15") in [tuple(p) for p in patterns]
    assert scanner.bluez.get("adapter") == "hci0"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_active_mode_reports_duplicates(ctx: RecordingContext) -> None:
    radio = SimulatedRadio()
    driver = BleScannerDriver(
        "ble-1",
        options(adapter="hci1"),
        scanner_class=radio.scanner_class(),
        resetter=RadioResetter(radio),
    )
    task = asyncio.create_task(driver.run(ctx))
    await wait_for(lambda: ctx.state is DriverState.RUNNING, "running active")
    [scanner] = radio.adapter("hci1").scanners
    assert scanner.scanning_mode == "active"
    assert scanner.bluez.get("filters") == {"DuplicateData": True}
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
