"""The simulator as just another driver: registration, options, zone accuracy end to end."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from edge.ble.driver import BleScannerDriver
from edge.drivers.base import DeviceConfig, Priority
from edge.drivers.registry import create_driver, driver_names
from protocols.messages import BlePresence, DeviceKind, PresenceKind
from simulators.ble.driver import SimBleDriver, SimBleOptions
from simulators.ble.truth import ZoneScorer
from tests.ble.conftest import RecordingContext


def test_drivers_are_registered_for_ble_scanners() -> None:
    names = driver_names()
    assert names["bleak"] is DeviceKind.BLE_SCANNER
    assert names["sim-ble"] is DeviceKind.BLE_SCANNER


def test_bleak_driver_from_config() -> None:
    config = DeviceConfig(
        id="ble-1",
        kind=DeviceKind.BLE_SCANNER,
        driver="bleak",
        options={
            "scanners": [
                {"adapter": "hci0", "zone": "entrance"},
                {"adapter": "hci1", "zone": "dairy"},
            ],
            "mode": "passive",
            "allowlist": {"app_uuids": ["5f2dd896-b886-4549-ae01-e41acd7a354a"]},
            "watchdog": {"silence_s": 60},
        },
    )
    driver = create_driver(config)
    assert isinstance(driver, BleScannerDriver)
    assert [s.adapter for s in driver.scanners] == ["hci0", "hci1"]
    assert driver.engine.zone_of == {"hci0": "entrance", "hci1": "dairy"}
    assert [z.zone for z in driver.snapshot().zones] == ["dairy", "entrance"]


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({}, "zone is required"),
        ({"zone": "z", "adapter": "usb0"}, "adapter"),
        ({"zone": "z", "mode": "sniff"}, "mode"),
        ({"zone": "z", "presence": {"alpha": 2}}, "presence.alpha"),
        ({"zone": "z", "colour": "red"}, "colour"),
        ({"zone": "z", "scanners": [{"zone": "a"}]}, "not both"),
        ({"scanners": [{"zone": "a"}, {"zone": "b"}]}, "unique"),
    ],
)
def test_bad_options_name_the_problem(options: dict[str, object], problem: str) -> None:
    config = DeviceConfig(id="ble-1", kind=DeviceKind.BLE_SCANNER, driver="bleak", options=options)
    with pytest.raises(ValueError, match=problem):
        create_driver(config)


def test_sim_driver_from_config() -> None:
    config = DeviceConfig(
        id="ble-sim",
        kind=DeviceKind.BLE_SCANNER,
        driver="sim-ble",
        options={"shoppers": 2, "non_app": 1, "speed": 0},
    )
    driver = create_driver(config)
    assert isinstance(driver, SimBleDriver)
    assert driver.driver_name == "sim-ble"
    assert len(driver.sim.phones) == 3


async def test_zone_accuracy_against_ground_truth(ctx: RecordingContext) -> None:
    driver = SimBleDriver(
        "ble-sim", SimBleOptions(seed=7, shoppers=12, non_app=6, speed=0, repeat=False)
    )
    scorer = ZoneScorer(driver.sim)
    task = asyncio.create_task(driver.run(ctx))
    end = driver.sim.end + 45
    next_sample = driver.sim.start + 1
    while driver.sim.now < end:
        await asyncio.sleep(0)
        if driver.sim.now >= next_sample:
            scorer.sample(driver.sim.now, driver.engine.zone_of_beacon)
            next_sample += 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert scorer.score.samples > 1_000
    assert scorer.score.accuracy >= 0.9, scorer.score
    events = ctx.events()
    kinds = Counter(e.kind for e in events)
    assert kinds[PresenceKind.ENTER] == kinds[PresenceKind.EXIT], "everybody left at the end"
    assert kinds[PresenceKind.DWELL] > 0
    # every shopper visited at least two zones (and may pass through others on the way)
    visits = sum(1 for p in driver.sim.phones if p.app) * 2
    assert visits <= kinds[PresenceKind.ENTER] <= visits * 3
    # batched: many events per message, at most one message per flush
    assert all(isinstance(m, BlePresence) and m.scanner == "ble-sim" for m in ctx.messages)
    assert len(ctx.messages) < len(events)
    assert set(ctx.priorities) == {Priority.EVENT}
    # gap-free sequence on the scanner's stream
    assert [m.seq for m in ctx.messages] == list(range(1, len(ctx.messages) + 1))
