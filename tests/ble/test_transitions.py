"""Enters, switches and exits go out at once; dwells wait for the flush_s batch.

The real `bleak` driver on a simulated radio (fake BleakScanners fed real bleak
`AdvertisementData`). `flush_s` is 60 s in these tests, so any presence message seen within
the test's window was an early (transition) flush; the asserts are about which messages
went out and in which order, not about how fast.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.ble.driver import BleScannerDriver
from edge.ble.options import BleakOptions
from edge.config import load_edge_settings
from edge.runtime import EdgeRuntime
from protocols.messages import BlePresence, DriverState, Message, PresenceKind
from simulators.ble.adverts import APPLE, bluez_advert, ibeacon_payload
from simulators.ble.radio import RadioResetter, SimulatedRadio
from tests.ble.conftest import RecordingContext
from tests.edge.helpers import Watcher, edge_config
from tests.servers import MosquittoBroker

APP = uuid.UUID("5f2dd896-b886-4549-ae01-e41acd7a354a")
TIMEOUT = 20.0
NEVER_S = 60.0  # flush_s: the periodic batch never comes within a test


def options(**overrides: object) -> BleakOptions:
    base: dict[str, object] = {
        "scanners": [{"adapter": "hci0", "zone": "coffee"}, {"adapter": "hci1", "zone": "tea"}],
        "allowlist": {"app_uuids": [str(APP)]},
        "flush_s": NEVER_S,
    }
    return BleakOptions.model_validate(base | overrides)


def send(radio: SimulatedRadio, rssi: int, *, minor: int = 2, adapter: str = "hci0") -> None:
    device, adv = bluez_advert(
        adapter,
        f"6E:11:22:33:{minor // 256:02X}:{minor % 256:02X}",
        rssi,
        manufacturer_data={APPLE: ibeacon_payload(APP, 1, minor, -59)},
    )
    assert radio.transmit(adapter, device, adv), "the fake scanner took the advert"


async def wait_for(condition: Callable[[], bool], what: str) -> None:
    async def poll() -> None:
        while not condition():  # noqa: ASYNC110 - the driver has no hook for this
            await asyncio.sleep(0.005)

    try:
        await asyncio.wait_for(poll(), TIMEOUT)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for: {what}") from None


class TimedContext(RecordingContext):
    """Also notes when (monotonic) each message was emitted."""

    def __init__(self) -> None:
        super().__init__()
        self.emitted_at: list[float] = []

    def emit(self, message_type: Any, /, **fields: Any) -> Any:
        self.emitted_at.append(time.monotonic())
        return super().emit(message_type, **fields)

    def presence(self) -> list[list[tuple[PresenceKind, str]]]:
        return [
            [(e.kind, e.zone) for e in m.events]
            for m in self.messages
            if isinstance(m, BlePresence)
        ]


class Running:
    def __init__(self, driver: BleScannerDriver, radio: SimulatedRadio, ctx: TimedContext):
        self.driver, self.radio, self.ctx = driver, radio, ctx
        self.task = asyncio.create_task(driver.run(ctx))

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


@pytest.fixture
async def start() -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def start_driver(**overrides: object) -> Running:
        radio = SimulatedRadio()
        driver = BleScannerDriver(
            "ble-1",
            options(**overrides),
            scanner_class=radio.scanner_class(),
            resetter=RadioResetter(radio),
        )
        run = Running(driver, radio, TimedContext())
        running.append(run)
        await wait_for(lambda: run.ctx.state is DriverState.RUNNING, "driver running")
        return run

    yield start_driver
    for run in running:
        if not run.task.done():
            await run.stop()


async def test_two_samples_do_not_enter_the_third_goes_out_at_once(
    start: Callable[..., Any],
) -> None:
    run: Running = await start()
    send(run.radio, -60)
    send(run.radio, -60)
    await asyncio.sleep(0.3)  # three transition gaps: an early flush would have happened
    assert run.driver.engine.zone_of_beacon("app:00010002") is None
    assert run.ctx.messages == []
    send(run.radio, -60)
    await wait_for(lambda: run.ctx.messages != [], "the enter, long before flush_s")
    assert run.ctx.presence() == [[(PresenceKind.ENTER, "coffee")]]
    assert run.driver.early_flushes == 1
    assert run.driver.metrics()["presence_early_flushes_total"] == 1


async def test_switch_and_exit_go_out_at_once(start: Callable[..., Any]) -> None:
    run: Running = await start()
    for _ in range(3):
        send(run.radio, -65)
    await wait_for(lambda: len(run.ctx.messages) == 1, "the enter")
    # tea's scanner hears it 15 dB stronger: smoothed, qualified, >= 6 dB: a switch
    for _ in range(3):
        send(run.radio, -50, adapter="hci1")
    await wait_for(lambda: len(run.ctx.messages) == 2, "the switch")
    # the phone walks out: both links fall below -78 dBm (smoothed: a few adverts)
    for _ in range(10):
        send(run.radio, -95, adapter="hci0")
        send(run.radio, -95, adapter="hci1")
    await wait_for(lambda: len(run.ctx.messages) == 3, "the exit")
    assert run.ctx.presence() == [
        [(PresenceKind.ENTER, "coffee")],
        [(PresenceKind.EXIT, "coffee"), (PresenceKind.ENTER, "tea")],  # one message
        [(PresenceKind.EXIT, "tea")],
    ]


async def test_a_dwell_waits_for_the_batch(start: Callable[..., Any]) -> None:
    run: Running = await start(presence={"dwell_s": 0.1})
    for _ in range(3):
        send(run.radio, -60)
    await wait_for(lambda: len(run.ctx.messages) == 1, "the enter")
    started = time.monotonic()
    while time.monotonic() - started < 0.4:  # seen 0.4 s > dwell_s in the zone
        send(run.radio, -60)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert len(run.ctx.messages) == 1, "the dwell did not make an early message"
    await run.stop()  # the driver's final flush sends what the batch holds
    assert run.ctx.presence() == [
        [(PresenceKind.ENTER, "coffee")],
        [(PresenceKind.DWELL, "coffee")],
    ]
    assert run.driver.early_flushes == 1


async def test_a_flood_of_enters_is_one_message_per_gap(start: Callable[..., Any]) -> None:
    gap = 0.25
    run: Running = await start(transition_gap_s=gap)
    phones = 60
    started = time.monotonic()
    for minor in range(phones):  # 60 shoppers entering over about a second
        for _ in range(3):
            send(run.radio, -60, minor=minor)
        await asyncio.sleep(0.015)
    sending_s = time.monotonic() - started
    await wait_for(lambda: len(run.ctx.events()) == phones, "every enter")
    assert all(e.kind is PresenceKind.ENTER for e in run.ctx.events())
    times = run.ctx.emitted_at
    # never two early messages closer than the gap, so no more than the window allows
    # (emit comes a moment after the driver's own gap check: 10 % slack)
    assert all(b - a >= 0.9 * gap for a, b in itertools.pairwise(times)), times
    assert len(times) <= sending_s / gap + 2
    assert len(times) == run.driver.early_flushes
    assert len(times) < phones / 5, "batched, not a message per enter"


async def test_null_gap_keeps_transitions_in_the_batch(start: Callable[..., Any]) -> None:
    run: Running = await start(transition_gap_s=None)
    for _ in range(3):
        send(run.radio, -60)
    await wait_for(lambda: run.driver.engine.zone_of_beacon("app:00010002") == "coffee", "entered")
    await asyncio.sleep(0.3)
    assert run.ctx.messages == []
    await run.stop()
    assert run.ctx.presence() == [[(PresenceKind.ENTER, "coffee")]]
    assert run.driver.early_flushes == 0


@pytest.mark.parametrize("gap", [0, -1, 11])
def test_transition_gap_is_checked(gap: float) -> None:
    with pytest.raises(ValidationError, match="transition_gap_s"):
        options(transition_gap_s=gap)


async def test_enter_reaches_the_broker_before_the_batch(
    tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    """The production daemon (outbox, forwarder, uplink) and a real Mosquitto."""
    device = {
        "id": "ble-1",
        "kind": "ble_scanner",
        "driver": "bleak",
        "options": options().model_dump(mode="json"),
    }
    settings = load_edge_settings(edge_config(tmp_path, mosquitto_broker.port, [device]))
    radio = SimulatedRadio()
    driver = BleScannerDriver(
        "ble-1",
        BleakOptions.model_validate(device["options"]),
        scanner_class=radio.scanner_class(),
        resetter=RadioResetter(radio),
    )
    runtime = EdgeRuntime(settings, {"ble-1": driver}, version="9.9.9", handle_signals=False)
    watcher = Watcher(mosquitto_broker.host, mosquitto_broker.port)
    task = asyncio.create_task(runtime.run())
    try:
        await asyncio.to_thread(watcher.wait_for, lambda m: m.type == "birth", what="birth")
        for _ in range(3):
            send(radio, -60)
        presence: Message = await asyncio.to_thread(
            watcher.wait_for, lambda m: isinstance(m, BlePresence), NEVER_S / 3, "ble.presence"
        )
        assert isinstance(presence, BlePresence)
        assert [(e.kind, e.beacon, e.zone) for e in presence.events] == [
            (PresenceKind.ENTER, "app:00010002", "coffee")
        ]
        assert driver.early_flushes == 1
    finally:
        runtime.stop()
        assert await asyncio.wait_for(task, 20) == 0
        watcher.close()
