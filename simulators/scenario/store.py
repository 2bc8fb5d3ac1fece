"""One simulated store: the real edge daemon with simulated drivers, and its people.

The store's `EdgeRuntime` is the production one (outbox, uplink, lifecycle, supervisors);
only the devices are simulated, at their protocol level: an LLRP reader on TCP (sim-llrp),
a CU16 locker bank on a pty (sim-cu16), BLE adverts as bleak objects (sim-ble). Many
stores share one asyncio loop (`handle_signals=False`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import EdgeSettings, OutboxSettings, create_drivers
from edge.runtime import EdgeRuntime
from protocols.messages import DeviceKind
from protocols.mqtt import MqttSettings
from simulators.drivers.cu16 import SimLockerDriver
from simulators.drivers.llrp import SimLlrpDriver
from simulators.llrp.world import World
from simulators.scenario.behaviour import LockerPeople, ShelfPeople, cancel_all
from simulators.scenario.model import Behaviour, Scenario, StoreSection
from simulators.scenario.truth import TruthWriter
from storegate import __version__

log = logging.getLogger(__name__)

TRUTH_DRAIN_S = 1.0


@dataclass(frozen=True, slots=True)
class StoreStats:
    store: str
    running: bool
    connected: bool
    items_on_shelves: int
    messages_sent: int
    outbox_depth: int


def edge_settings(
    scenario: Scenario, store: StoreSection, mqtt: MqttSettings, state_dir: Path, seed: int
) -> EdgeSettings:
    devices: list[dict[str, Any]] = [
        {
            "id": "shelves",
            "kind": DeviceKind.RFID_READER,
            "driver": "sim-llrp",
            "options": {
                "antennas": store.shelves,
                "items_per_shelf": store.stock_per_shelf,
                "products_per_shelf": store.products_per_shelf,
                "seed": seed,
                "report_interval_s": scenario.report_interval_s,
            },
        }
    ]
    if store.lockers is not None:
        devices.append(
            {
                "id": "lockers",
                "kind": DeviceKind.LOCKER_BANK,
                "driver": "sim-cu16",
                "options": {
                    "boards": store.lockers.boards,
                    "locks_per_board": store.lockers.locks_per_board,
                },
            }
        )
    if store.ble is not None:
        devices.append(
            {
                "id": "beacons",
                "kind": DeviceKind.BLE_SCANNER,
                "driver": "sim-ble",
                "options": {
                    "seed": seed,
                    "shoppers": store.ble.app_shoppers,
                    "non_app": store.ble.other_phones,
                    # present-time presence events: offers refuse stale ones
                    "realtime": True,
                },
            }
        )
    return EdgeSettings.model_validate(
        {
            "store": store.id,
            "node": store.node,
            "mqtt": mqtt.model_dump(),
            "outbox": OutboxSettings(path=state_dir / f"{store.id}.outbox.db").model_dump(),
            "health_interval_s": scenario.health_interval_s,
            "shutdown_flush_s": 2.0,
            "devices": devices,
        }
    )


class SimulatedStore:
    def __init__(
        self,
        scenario: Scenario,
        store: StoreSection,
        *,
        mqtt: MqttSettings,
        state_dir: Path,
        seed: int,
        truth: TruthWriter | None = None,
    ) -> None:
        self.section = store
        self.id = store.id
        self.node = store.node
        self.truth = truth
        self.settings = edge_settings(scenario, store, mqtt, state_dir, seed)
        drivers = create_drivers(self.settings, f"store {store.id}")
        self.drivers = drivers  # the simulated devices, for the people who act on them
        rfid = drivers["shelves"]
        assert isinstance(rfid, SimLlrpDriver)
        world = rfid.simulator.world
        assert isinstance(world, World)  # sim-llrp builds its own world, never a view
        self.world = world
        behaviour: Behaviour = scenario.behaviour_of(store)
        rng = random.Random(seed)
        self.shelves = ShelfPeople(self.world, behaviour, store.stock_per_shelf, rng)
        locker = drivers.get("lockers")
        self.lockers = (
            LockerPeople(locker, store.id, store.node, behaviour, random.Random(seed + 1))
            if isinstance(locker, SimLockerDriver)
            else None
        )
        self.runtime = EdgeRuntime(
            self.settings,
            drivers,
            version=__version__,
            handle_signals=False,
            backoff_min_s=0.5,
            backoff_max_s=10.0,
        )
        self.started_at = time.time()
        self._task: asyncio.Task[int] | None = None
        self._people: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------------ run

    def start(self) -> None:
        self.started_at = time.time()
        self._task = asyncio.create_task(self.runtime.run(), name=f"edge-{self.id}")
        people = [self.shelves.shoppers(), self.shelves.staff(), self._drain_truth()]
        if self.lockers is not None:
            people.append(self.lockers.orders())
        self._people = [asyncio.create_task(p) for p in people]

    async def stop(self) -> None:
        """People leave, then the edge shuts down (flushes its outbox, sends its death)."""
        await cancel_all(self._people)
        self._flush_truth()
        if self._task is None:
            return
        self.runtime.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    @property
    def failed(self) -> BaseException | None:
        """Why the edge runtime ended on its own, if it did."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    @property
    def taken_over(self) -> bool:
        uplink = getattr(self.runtime, "uplink", None)  # exists once run() started
        return bool(uplink is not None and uplink.taken_over.is_set())

    async def _drain_truth(self) -> None:
        while True:
            await asyncio.sleep(TRUTH_DRAIN_S)
            self._flush_truth()

    def _flush_truth(self) -> None:
        if self.truth is not None:
            self.truth.drain(self.id, self.world, self.shelves.reasons, self.started_at)
        else:  # nobody reads it: keep the world's history from growing
            self.world.history.clear()
            self.shelves.reasons.clear()

    # ------------------------------------------------------------------ stats

    def stats(self) -> StoreStats:
        runtime = self.runtime
        uplink = getattr(runtime, "uplink", None)
        outbox = getattr(runtime, "outbox", None)
        forwarder = getattr(runtime, "forwarder", None)  # these exist once run() started
        return StoreStats(
            store=self.id,
            running=self._task is not None and not self._task.done(),
            connected=bool(uplink is not None and uplink.connected.is_set()),
            items_on_shelves=len(self.world.items),
            messages_sent=forwarder.acknowledged if forwarder is not None else 0,
            outbox_depth=int(outbox.depth) if outbox is not None else 0,
        )
