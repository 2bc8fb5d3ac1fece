"""The impinj-iot driver against the simulated R700 over real HTTP (asyncio TCP server)."""

from __future__ import annotations

import time

import pytest

from edge.drivers.base import DeviceConfig
from edge.drivers.registry import create_driver
from edge.rfid.impinj import ImpinjIotDriver, ImpinjIotOptions, parse_event
from protocols.messages import DeviceKind, DriverState, ItemEventKind
from simulators.drivers.impinj import SimImpinjIotDriver
from simulators.llrp.world import World, WorldConfig
from simulators.rfid_iot.impinj import SimulatedImpinjReader
from tests.rfid_iot.helpers import FAST, RecordingContext, running, truth_counts, wait_for

USER_ENV, PASSWORD_ENV = "TEST_IMPINJ_USER", "TEST_IMPINJ_PASSWORD"


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(USER_ENV, "root")
    monkeypatch.setenv(PASSWORD_ENV, "impinj")


def options(sim: SimulatedImpinjReader, world: World, **overrides: object) -> ImpinjIotOptions:
    fields: dict[str, object] = {
        "base_url": sim.url,
        "antennas": world.shelves(),
        "username_env": USER_ENV,
        "password_env": PASSWORD_ENV,
        "report_interval_s": 1.0,
        "idle_timeout_s": 5.0,
        "backoff_initial_s": 0.2,
        "presence": FAST,
    }
    return ImpinjIotOptions.model_validate(fields | overrides)


async def test_driver_follows_ground_truth_skips_bad_lines_and_survives_a_dropped_stream() -> None:
    world = World(WorldConfig(antennas=3, items_per_shelf=6, read_rate=0.8, seed=3))
    async with SimulatedImpinjReader(world, cycle_s=0.25, keepalive_s=0.5) as sim:
        driver = ImpinjIotDriver("r700-1", options(sim, world))
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "initial stock")
            assert ctx.states[-1][0] is DriverState.RUNNING
            assert sim.running_preset == "storegate"  # the driver started its preset
            arrived = [epc for kind, epc, _ in ctx.items() if kind is ItemEventKind.ARRIVED]
            assert sorted(arrived) == sorted(world.items)  # each item arrived exactly once

            # garbage on the stream is counted and skipped; the reads keep flowing
            reads_before = driver.engine.reads
            for bad in (
                b"{not json",
                b"[1, 2]",
                b'{"eventType": "tagInventory", "tagInventoryEvent": {"antennaPort": 1}}',
                b'{"eventType": "tagInventory", "tagInventoryEvent": '
                b'{"epcHex": "30ZZ", "antennaPort": 1}}',
                b'{"eventType": "tagInventory", "tagInventoryEvent": '
                b'{"epcHex": "3074257BF7194E4000001A85", "antennaPort": "one"}}',
            ):
                sim.inject_line(bad)
            await wait_for(lambda: driver.bad_events == 5, 10, "bad lines counted")
            await wait_for(lambda: driver.engine.reads > reads_before + 10, 10, "reads go on")
            assert driver.metrics()["bad_events"] == 5
            assert driver.metrics()["other_events"] >= 1  # keepalives
            assert driver.connected.is_set()

            # a shopper takes an item while the stream is cut: it departs once, nothing else
            taken = sorted(world.items)[0]
            world.remove(taken, time.time())
            events_before = len(ctx.items())
            await sim.drop_connections()
            await wait_for(
                lambda: any(s is DriverState.DEGRADED for s, _ in ctx.states), 10, "degraded"
            )
            await wait_for(driver.connected.is_set, 10, "reconnect")
            await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "after reconnect")
            new_items = ctx.items()[events_before:]
            assert new_items == [(ItemEventKind.DEPARTED, taken, None)]
            assert driver.reconnects == 1
            assert driver.metrics()["reads_per_s"] > 0


async def test_wrong_password_is_reported_and_retried_until_fixed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong-secret")
    world = World(WorldConfig(antennas=1, items_per_shelf=2, read_rate=1.0))
    async with SimulatedImpinjReader(world, cycle_s=0.25) as sim:
        driver = ImpinjIotDriver("r700-2", options(sim, world))
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: len(ctx.states) >= 2, 10, "retries")
            assert all(s is DriverState.DEGRADED for s, _ in ctx.states)
            reason = ctx.states[0][1] or ""
            assert "refused the credentials (HTTP 401)" in reason
            assert "wrong-secret" not in reason  # the secret never shows
            assert sim.running_preset is None  # nothing started without auth
            monkeypatch.setenv(PASSWORD_ENV, "impinj")  # the operator fixes the secret
            await wait_for(driver.connected.is_set, 10, "connected after the fix")
            await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "stock")


async def test_missing_env_var_and_unknown_preset_are_clear_reasons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World(WorldConfig(antennas=1, items_per_shelf=1))
    async with SimulatedImpinjReader(world, cycle_s=0.25) as sim:
        monkeypatch.delenv(PASSWORD_ENV)
        driver = ImpinjIotDriver("r700-3", options(sim, world))
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: len(ctx.states) >= 1, 10, "a state")
        assert f"environment variable {PASSWORD_ENV} not set" in (ctx.states[0][1] or "")

        monkeypatch.setenv(PASSWORD_ENV, "impinj")
        driver = ImpinjIotDriver("r700-3", options(sim, world, preset="nope"))
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: len(ctx.states) >= 1, 10, "a state")
        assert "start preset 'nope': HTTP 404" in (ctx.states[0][1] or "")


def test_parse_event_reads_the_r700_fields() -> None:
    line = (
        '{"timestamp":"2026-11-23T19:00:00.000Z","hostname":"impinj-14-46-36",'
        '"eventType":"tagInventory","tagInventoryEvent":{"epcHex":"3074257bf7194e4000001a85",'
        '"antennaPort":2,"antennaName":"Antenna 2","peakRssiCdbm":-5450}}'
    )
    assert parse_event(line) == ("3074257BF7194E4000001A85", 2, -54.5)
    base64_only = '{"eventType":"tagInventory","tagInventoryEvent":{"epc":"MHQle/cZTkAAABqF","antennaPort":1}}'  # noqa: E501
    assert parse_event(base64_only) == ("3074257BF7194E4000001A85", 1, -80.0)
    assert parse_event('{"eventType":"keepalive"}') is None
    assert parse_event(b"\xff\xfe") == "not JSON"


async def test_sim_impinj_iot_is_a_registered_driver_and_emits_events() -> None:
    import edge.rfid.impinj  # noqa: F401  (registers the drivers)

    driver = create_driver(
        DeviceConfig(
            id="sim-r700",
            kind=DeviceKind.RFID_READER,
            driver="sim-impinj-iot",
            options={
                "antennas": 2,
                "items_per_shelf": 4,
                "cycle_s": 0.25,
                "report_interval_s": 1.0,
                "presence": FAST,
            },
        )
    )
    assert isinstance(driver, SimImpinjIotDriver)
    ctx = RecordingContext()
    async with running(driver, ctx):
        await wait_for(lambda: ctx.counts() == truth_counts(driver.simulator.world), 20, "stock")
    assert ctx.items()


def test_bad_options_are_rejected_with_the_option_name() -> None:
    import edge.rfid.impinj  # noqa: F401

    with pytest.raises(ValueError, match="base_url"):
        create_driver(
            DeviceConfig(
                id="r",
                kind=DeviceKind.RFID_READER,
                driver="impinj-iot",
                options={"base_url": "10.0.0.21", "antennas": {1: "s1"}},
            )
        )
    with pytest.raises(ValueError, match="base_url must not contain credentials"):
        create_driver(
            DeviceConfig(
                id="r",
                kind=DeviceKind.RFID_READER,
                driver="impinj-iot",
                options={"base_url": "https://root:impinj@10.0.0.21", "antennas": {1: "s1"}},
            )
        )
    with pytest.raises(ValueError, match="antennas"):
        create_driver(
            DeviceConfig(
                id="r",
                kind=DeviceKind.RFID_READER,
                driver="impinj-iot",
                options={"base_url": "https://10.0.0.21"},
            )
        )


async def test_stream_that_goes_silent_is_reconnected() -> None:
    world = World(WorldConfig(antennas=1, items_per_shelf=0))  # nothing to read
    async with SimulatedImpinjReader(world, cycle_s=0.25, keepalive_s=60) as sim:
        driver = ImpinjIotDriver("r700-4", options(sim, world, idle_timeout_s=0.5))
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: driver.reconnects >= 1, 10, "idle reconnect")
        assert any("ReadTimeout" in (reason or "") for _, reason in ctx.states)
