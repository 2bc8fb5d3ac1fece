"""The LLRP driver keeps a strict (LLRP 1.0.1) reader inventorying, for every trigger
combination a deployment may configure, and treats a connected but silent reader as an
outage. The real driver against the simulated reader over TCP."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import ValidationError

from edge.rfid.driver import ROSPEC_ID, InventoryOptions, LlrpDriver, LlrpOptions
from protocols.llrp.constants import ReaderEventType
from protocols.messages import DriverState, ItemEventKind
from simulators.llrp.reader import SimulatedReader
from simulators.llrp.world import World, WorldConfig
from tests.rfid.test_driver import RecordingContext, running, wait_for

CYCLE_S = 0.1
PRESENCE = {"epoch_s": 0.25}


def world() -> World:
    return World(
        WorldConfig(antennas=2, items_per_shelf=3, read_rate=1.0, cross_read_rate=0.0, seed=5)
    )


def options(sim: SimulatedReader, **overrides: Any) -> LlrpOptions:
    settings: dict[str, Any] = {
        "port": sim.port,
        "antennas": sim.world.shelves(),
        "report_interval_s": 1.0,
        "keepalive_s": 1.0,
        "backoff_initial_s": 0.1,
        "backoff_max_s": 0.5,
        "presence": PRESENCE,
        "inventory": {"cycle_ms": int(CYCLE_S * 1000)},
        **overrides,
    }
    return LlrpOptions.model_validate(settings)


@contextlib.asynccontextmanager
async def driving(
    sim: SimulatedReader, **overrides: Any
) -> AsyncIterator[tuple[LlrpDriver, RecordingContext]]:
    driver = LlrpDriver("reader-1", options(sim, **overrides))
    ctx = RecordingContext()
    async with running(driver, ctx):
        yield driver, ctx


def departures(ctx: RecordingContext) -> list[str]:
    return [epc for kind, epc, _ in ctx.items() if kind is ItemEventKind.DEPARTED]


async def all_arrived(driver: LlrpDriver, sim: SimulatedReader) -> None:
    await wait_for(lambda: driver.engine.items() == sim.world.truth(), 10, "every item")


COMBINATIONS = [
    # start, AISpec stop, report every N tags (0: at the end of each AISpec)
    ("periodic", "duration", 0),  # the default
    ("periodic", "duration", 4),
    ("immediate", "duration", 0),  # ends every cycle: the driver restarts it
    ("null", "duration", 0),
    ("null", "duration", 4),
    ("immediate", "null", 1),  # continuous: one endless AISpec
    ("null", "null", 3),
]


@pytest.mark.parametrize(("start", "stop", "n"), COMBINATIONS)
async def test_inventory_never_silently_stops(start: str, stop: str, n: int) -> None:
    async with SimulatedReader(world(), cycle_s=CYCLE_S) as sim:
        inventory = {"start": start, "stop": stop, "report_every_n_tags": n, "cycle_ms": 100}
        async with driving(sim, inventory=inventory) as (driver, ctx):
            await all_arrived(driver, sim)
            for _ in range(3):  # 15 read cycles: a ROSpec that ran once is long over
                before = driver.engine.reads
                await asyncio.sleep(0.5)
                assert driver.engine.reads - before >= 6, "inventory stopped"
            assert departures(ctx) == []
            assert ctx.states[-1][0] is DriverState.RUNNING
            assert driver.silent_spells == 0
            restarts = driver.rospec_restarts
            if stop == "duration" and start != "periodic":
                assert restarts >= 10  # at each End_of_ROSpec
            else:
                assert restarts == 0  # the reader's own trigger or an endless ROSpec


async def test_reader_that_does_not_send_rospec_events_is_repaired_by_the_watchdog() -> None:
    async with SimulatedReader(world(), cycle_s=CYCLE_S) as sim:
        sim.muted_events = {ReaderEventType.ROSPEC}  # the restart cue never comes
        inventory = {"start": "null", "stop": "duration", "cycle_ms": 100}
        async with driving(sim, inventory=inventory, silent_intervals=2) as (driver, ctx):
            await wait_for(lambda: driver.rospec_restarts >= 1, 10, "a repair")
            degraded = [reason for state, reason in ctx.states if state is DriverState.DEGRADED]
            assert degraded
            assert "connected, but no tag report for 2 s" in (degraded[0] or "")
            before = driver.engine.reads
            await wait_for(lambda: driver.engine.reads > before, 5, "reads after the repair")
            await wait_for(lambda: ctx.states[-1][0] is DriverState.RUNNING, 5, "running again")
            assert driver.reconnects == 0  # repaired over the same connection


async def test_connected_but_silent_reader_freezes_departures() -> None:
    """No report for N report intervals is an outage like a lost connection; the silent-shelf
    guard alone (bounded at 0.5 s here) would let every item depart."""
    async with SimulatedReader(world(), cycle_s=CYCLE_S) as sim:
        presence = {**PRESENCE, "silent_shelf_max_s": 0.5}
        async with driving(sim, presence=presence, silent_intervals=2) as (driver, ctx):
            await all_arrived(driver, sim)
            sim.world.config.read_rate = 0.0  # the radio reads nothing, the link stays up
            await wait_for(lambda: ctx.states[-1][0] is DriverState.DEGRADED, 5, "outage")
            assert "no tag report" in (ctx.states[-1][1] or "")
            await asyncio.sleep(2.5)  # 10 epochs: twice the shortest departure window
            assert departures(ctx) == []
            assert driver.engine.items() == sim.world.truth()
            assert driver.connected.is_set() is False
            sim.world.config.read_rate = 1.0
            await wait_for(lambda: ctx.states[-1][0] is DriverState.RUNNING, 5, "running again")
            await asyncio.sleep(1.0)
            assert departures(ctx) == []


async def test_reader_reboot_the_driver_adds_its_rospec_again() -> None:
    async with SimulatedReader(world(), cycle_s=CYCLE_S) as sim, driving(sim) as (driver, ctx):
        await all_arrived(driver, sim)
        await sim.reboot(down_s=0.3)
        assert sim.rospecs == {}
        await wait_for(lambda: ROSPEC_ID in sim.rospecs, 10, "the ROSpec added again")
        before = driver.engine.reads
        await wait_for(lambda: driver.engine.reads > before + 12, 5, "reads after reboot")
        assert departures(ctx) == []
        assert driver.reconnects == 1


async def test_shutdown_deletes_the_rospec_and_closes_the_llrp_way() -> None:
    async with SimulatedReader(world(), cycle_s=CYCLE_S) as sim:
        async with driving(sim) as (driver, _):
            await wait_for(driver.connected.is_set, 5, "connected")
            assert ROSPEC_ID in sim.rospecs
        # the driver task is cancelled and awaited on leaving `driving`
        assert sim.rospecs == {}
        assert sim.goodbyes == 1  # CLOSE_CONNECTION answered before the socket closed


async def test_model_and_firmware_come_from_the_capabilities() -> None:
    identity = {"manufacturer": 25882, "model": 2001002, "firmware": "5.14.0.240"}
    sim = SimulatedReader(world(), cycle_s=CYCLE_S, **identity)  # type: ignore[arg-type]
    async with sim, driving(sim) as (driver, _):
        await wait_for(driver.connected.is_set, 5, "connected")
        info = driver.info()
    assert (info.model, info.firmware) == ("Impinj model 2001002", "5.14.0.240")


async def test_a_reader_held_by_another_client_is_reported() -> None:
    async with SimulatedReader(world(), cycle_s=CYCLE_S) as sim:
        _, holder = await asyncio.open_connection("127.0.0.1", sim.port)
        try:
            async with driving(sim) as (_, ctx):
                await wait_for(lambda: len(ctx.states) >= 2, 5, "retries")
        finally:
            holder.close()
    assert all(state is DriverState.DEGRADED for state, _ in ctx.states)
    assert "FAILED_CLIENT_INITIATED_CONNECTION_EXISTS" in (ctx.states[0][1] or "")


@pytest.mark.parametrize(
    ("inventory", "presence", "message"),
    [
        ({"stop": "null", "start": "immediate"}, {}, "report_every_n_tags"),
        ({"stop": "null", "report_every_n_tags": 1}, {}, "periodic needs stop: duration"),
        ({"cycle_ms": 2000}, {}, "longer than the presence epoch"),
        ({"cycle_ms": 300}, {"epoch_s": 0.25}, "longer than the presence epoch"),
    ],
)
def test_inventory_that_cannot_work_is_refused(
    inventory: dict[str, Any], presence: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        LlrpOptions(
            antennas={1: "s1"},
            inventory=InventoryOptions.model_validate(inventory),
            presence=presence,
        )


def test_identity_from_a_real_impinj_capture() -> None:
    """GET_READER_CAPABILITIES_RESPONSE as a Speedway sent it (tests/fixtures/llrp)."""
    from protocols.llrp import decode_body
    from protocols.llrp.spec import MESSAGE_NAMES
    from tests.conftest import FIXTURES

    body = (FIXTURES / "llrp" / "GetReaderCapabilitiesResponse-000.bytes").read_bytes()
    driver = LlrpDriver("reader-1", LlrpOptions(antennas={1: "shelf-1"}))
    driver._read_identity(decode_body(MESSAGE_NAMES["GET_READER_CAPABILITIES_RESPONSE"], body))
    assert (driver.model, driver.firmware) == ("Impinj model 2001002", "5.14.0.240")
