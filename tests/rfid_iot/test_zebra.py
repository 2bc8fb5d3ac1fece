"""The zebra-iot driver against the simulated IoT Connector, through a real MQTT broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from edge.drivers.base import DeviceConfig
from edge.drivers.registry import create_driver
from edge.rfid.zebra import ZebraIotDriver, ZebraIotOptions, parse_tag_events
from protocols.messages import DeviceKind, DriverState, ItemEventKind
from protocols.mqtt import MqttSettings
from simulators.drivers.zebra import SimZebraIotDriver
from simulators.llrp.world import World, WorldConfig
from simulators.rfid_iot.zebra import SimulatedZebraConnector
from tests.rfid_iot.helpers import FAST, RecordingContext, running, truth_counts, wait_for
from tests.servers import MosquittoBroker, mosquitto, require_binary

DATA, MGMT = "zebra/fx9600-1/data", "zebra/fx9600-1/mgmt"


def settings(broker: MosquittoBroker, **fields: object) -> MqttSettings:
    return MqttSettings.model_validate(
        {"port": broker.port, "reconnect_min_s": 0.5, "reconnect_max_s": 1.0} | fields
    )


def driver_options(broker: MosquittoBroker, world: World, **fields: object) -> ZebraIotOptions:
    return ZebraIotOptions.model_validate(
        {
            "mqtt": settings(broker),
            "data_topic": DATA,
            "management_topic": MGMT,
            "antennas": world.shelves(),
            "report_interval_s": 1.0,
            "presence": FAST,
        }
        | fields
    )


async def test_driver_follows_ground_truth_skips_bad_events_and_survives_a_broker_restart(
    mosquitto_broker: MosquittoBroker,
) -> None:
    world = World(WorldConfig(antennas=3, items_per_shelf=6, read_rate=0.8, seed=5))
    sim = SimulatedZebraConnector(
        world,
        settings(mosquitto_broker),
        data_topic=DATA,
        management_topic=MGMT,
        cycle_s=0.25,
        heartbeat_s=0.5,
        batch_size=4,  # the connector's batching: JSON arrays of events
    )
    driver = ZebraIotDriver("fx9600-1", driver_options(mosquitto_broker, world))
    ctx = RecordingContext()
    async with sim, running(driver, ctx):
        await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "initial stock")
        assert ctx.states[-1][0] is DriverState.RUNNING
        arrived = [epc for kind, epc, _ in ctx.items() if kind is ItemEventKind.ARRIVED]
        assert sorted(arrived) == sorted(world.items)  # each item arrived exactly once
        await wait_for(lambda: driver.heartbeats >= 1, 10, "a heartbeat")

        # garbage on the data topic is counted and skipped; good reads in the same
        # message still count
        reads_before = driver.engine.reads
        sim.publish_raw(b"{not json")
        sim.publish_raw(b'{"data": {"idHex": "3074257bf7194e4000001a85"}, "type": "SIMPLE"}')
        sim.publish_raw(
            b'[{"data": {"idHex": "zz", "antenna": 1}},'
            b' {"data": {"idHex": "e200001d", "antenna": 1, "format": "tid"}},'
            b' {"data": {"idHex": "3074257bf7194e4000001a85", "antenna": 1, "peakRssi": -50}}]'
        )
        await wait_for(lambda: driver.bad_events == 4, 10, "bad events counted")
        await wait_for(lambda: driver.engine.reads > reads_before + 10, 10, "reads go on")
        assert driver.metrics()["bad_events"] == 4

        # the broker goes away for a while: DEGRADED, nothing departs, then it all resumes
        events_before = len(ctx.items())
        mosquitto_broker.stop()
        await wait_for(lambda: not driver.connected.is_set(), 10, "degraded")
        latest_state, _ = ctx.states[-1]
        assert latest_state is DriverState.DEGRADED
        assert any("disconnected from the broker" in (r or "") for _, r in ctx.states)
        taken = sorted(world.items)[0]
        world.remove(taken, time.time())
        await wait_for(lambda: sim.cycles_skipped > 8, 10, "reads lost while away")
        assert len(ctx.items()) == events_before  # the outage guard: nothing departed
        mosquitto_broker.start()
        await wait_for(driver.connected.is_set, 20, "reconnect")
        await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "after the restart")
        assert ctx.items()[events_before:] == [(ItemEventKind.DEPARTED, taken, None)]
        assert driver.reconnects == 1
        assert driver.metrics()["reads_per_s"] > 0


async def test_broker_refusing_credentials_is_reported_and_retried(tmp_path: Path) -> None:
    require_binary("mosquitto", hint="apt install mosquitto")
    passwords = tmp_path / "passwd"
    passwords.write_text("")
    broker = mosquitto(tmp_path, allow_anonymous=False, extra_config=f"password_file {passwords}\n")
    broker.start()
    try:
        world = World(WorldConfig(antennas=1, items_per_shelf=1))
        options = driver_options(broker, world, mqtt=settings(broker, username="reader"))
        driver = ZebraIotDriver("fx9600-2", options)
        ctx = RecordingContext()
        async with running(driver, ctx):
            await wait_for(lambda: len(ctx.states) >= 3, 15, "refused twice")
        assert all(s is DriverState.DEGRADED for s, _ in ctx.states)
        refusals = [r for _, r in ctx.states[1:] if r and "refused the connection" in r]
        assert len(refusals) >= 2, ctx.states  # retried, with the reason each time
        assert any("authori" in r.lower() or "password" in r.lower() for r in refusals)
    finally:
        broker.kill()


async def test_silent_reader_goes_degraded_and_comes_back(
    mosquitto_broker: MosquittoBroker,
) -> None:
    world = World(WorldConfig(antennas=2, items_per_shelf=3, read_rate=1.0))
    sim = SimulatedZebraConnector(
        world, settings(mosquitto_broker), data_topic=DATA, management_topic=MGMT, cycle_s=0.25
    )
    driver = ZebraIotDriver(
        "fx9600-3", driver_options(mosquitto_broker, world, heartbeat_timeout_s=1.0)
    )
    ctx = RecordingContext()
    async with sim, running(driver, ctx):
        await wait_for(lambda: ctx.counts() == truth_counts(world), 20, "stock")
        events_before = len(ctx.items())
        sim.publishing = False  # connected to the broker, but the reader says nothing
        await wait_for(lambda: not driver.connected.is_set(), 10, "silence noticed")
        assert "reader silent" in (ctx.states[-1][1] or "")
        sim.publishing = True
        await wait_for(driver.connected.is_set, 10, "back")
        assert len(ctx.items()) == events_before  # the silence made nothing depart


async def test_a_stop_that_lands_with_a_wake_up_still_stops_the_driver(
    mosquitto_broker: MosquittoBroker,
) -> None:
    # Python 3.11's asyncio.wait_for drops a cancellation that arrives in the same loop
    # tick as the awaited event (cpython gh-86296): the driver then never stopped and a CI
    # run hung here. The wake-up and the cancel are delivered together on purpose.
    world = World(WorldConfig(antennas=2, items_per_shelf=3, read_rate=1.0))
    driver = ZebraIotDriver("fx9600-4", driver_options(mosquitto_broker, world))
    task = asyncio.create_task(driver.run(RecordingContext()))
    try:
        await wait_for(driver.connected.is_set, 10, "connected")
        driver._wake.set()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert done, "the driver ignored its cancellation"
        assert task.cancelled()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_parse_tag_events_reads_zebra_fields() -> None:
    payload = (
        b'{"data":{"eventNum":7,"format":"epc","idHex":"3074257bf7194e4000001a85",'
        b'"antenna":3,"peakRssi":-61,"reads":2},"timestamp":"2026-11-23T19:00:00.000+0000",'
        b'"type":"SIMPLE"}'
    )
    assert parse_tag_events(payload) == ([("3074257BF7194E4000001A85", 3, -61.0)], [])
    reads, problems = parse_tag_events(b'[{"data": {"idHex": "30", "antenna": true}}, 5]')
    assert reads == []
    assert problems == ["event without an integer antenna", "event without a data object"]


async def test_sim_zebra_iot_is_a_registered_driver_and_emits_events(
    mosquitto_broker: MosquittoBroker,
) -> None:
    import edge.rfid.zebra  # noqa: F401  (registers the drivers)

    driver = create_driver(
        DeviceConfig(
            id="sim-fx",
            kind=DeviceKind.RFID_READER,
            driver="sim-zebra-iot",
            options={
                "mqtt": {"port": mosquitto_broker.port},
                "antennas": 2,
                "items_per_shelf": 4,
                "cycle_s": 0.25,
                "report_interval_s": 1.0,
                "presence": FAST,
            },
        )
    )
    assert isinstance(driver, SimZebraIotDriver)
    ctx = RecordingContext()
    async with running(driver, ctx):
        await wait_for(lambda: ctx.counts() == truth_counts(driver.simulator.world), 20, "stock")


def test_bad_options_are_rejected_with_the_option_name() -> None:
    import edge.rfid.zebra  # noqa: F401

    with pytest.raises(ValueError, match="data_topic"):
        create_driver(
            DeviceConfig(
                id="r",
                kind=DeviceKind.RFID_READER,
                driver="zebra-iot",
                options={"mqtt": {}, "antennas": {1: "s1"}},
            )
        )
    with pytest.raises(ValueError, match="qos"):
        create_driver(
            DeviceConfig(
                id="r",
                kind=DeviceKind.RFID_READER,
                driver="zebra-iot",
                options={"mqtt": {}, "data_topic": "t", "qos": 2, "antennas": {1: "s1"}},
            )
        )
