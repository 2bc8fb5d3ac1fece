"""One simulated store in-process on the embedded broker: online orders end in a pickup that
the real locker driver verifies and publishes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from protocols.codec import decode
from protocols.messages import CompartmentState, LockerEvents
from protocols.topics import TOPIC_PREFIX
from simulators.scenario.fleet import Fleet
from simulators.scenario.model import parse_scenario
from tests.mqtt_helpers import Collector
from tests.servers import EmbeddedBroker


async def test_online_orders_are_loaded_and_collected_with_the_code(
    embedded_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    scenario = parse_scenario(
        {
            "broker": {"port": embedded_broker.port, "protocol": "3.1.1"},
            "behaviour": {
                "shoppers_per_minute": 0,
                "orders_per_hour": 3600,
                "pickup_after_s": {"low": 0.5, "high": 1},
            },
            "stores": [{"id": "store-9", "ble": None, "lockers": {"locks_per_board": 4}}],
        }
    )
    collector = Collector("127.0.0.1", embedded_broker.port, [f"{TOPIC_PREFIX}/+/+/locker/#"])
    fleet = Fleet(scenario, state_dir=tmp_path)
    await fleet.start()
    lockers = fleet.stores[0].lockers
    assert lockers is not None
    try:
        for _ in range(600):
            if lockers.counters.collected >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        await fleet.stop()
        collector.close()
    assert lockers.counters.collected >= 2, lockers.counters
    assert lockers.counters.refused == 0
    causes: dict[CompartmentState, set[str]] = {}
    while not collector.messages.empty():
        message = decode(collector.messages.get().payload)
        if isinstance(message, LockerEvents):
            for event in message.events:
                causes.setdefault(event.state, set()).add(event.cause)
    assert CompartmentState.AWAITING_PICKUP in causes  # the courier loaded and shut the door
    assert CompartmentState.PICKUP_OPEN in causes  # the keypad code opened it
