"""Many simulated stores on one asyncio loop: start them in waves, stop them together."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from protocols.mqtt import MqttSettings
from simulators.scenario.model import Scenario
from simulators.scenario.store import SimulatedStore, StoreStats
from simulators.scenario.truth import TruthWriter

START_WAVE = 10  # stores started at once; the next wave follows after a short pause
START_PAUSE_S = 0.2


@dataclass(frozen=True, slots=True)
class FleetStats:
    stores: list[StoreStats]
    rss_bytes: int
    cpu_percent: float

    @property
    def connected(self) -> int:
        return sum(1 for s in self.stores if s.connected)

    @property
    def messages_sent(self) -> int:
        return sum(s.messages_sent for s in self.stores)


class Fleet:
    def __init__(
        self, scenario: Scenario, *, state_dir: Path, mqtt: MqttSettings | None = None
    ) -> None:
        self.scenario = scenario
        self.truth = TruthWriter(scenario.truth) if scenario.truth is not None else None
        mqtt = mqtt or scenario.broker.settings()
        self.stores = [
            SimulatedStore(
                scenario,
                section,
                mqtt=mqtt,
                state_dir=state_dir,
                seed=scenario.seed * 10_007 + index,
                truth=self.truth,
            )
            for index, section in enumerate(scenario.stores)
        ]
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent()  # the first call only sets the reference point

    async def start(self, on_started: Callable[[SimulatedStore], None] | None = None) -> None:
        for index, store in enumerate(self.stores):
            store.start()
            if on_started is not None:
                on_started(store)
            if (index + 1) % START_WAVE == 0:
                await asyncio.sleep(START_PAUSE_S)

    async def stop(self) -> None:
        await asyncio.gather(*(store.stop() for store in self.stores))
        if self.truth is not None:
            self.truth.close()

    def taken_over(self) -> list[tuple[str, str]]:
        """Stores whose session another client with the same client id took over (MQTT 5
        says so in its DISCONNECT; 3.1.1 does not, see simulators/preflight.py)."""
        return [(s.id, s.node) for s in self.stores if s.taken_over]

    def failures(self) -> dict[str, BaseException]:
        return {s.id: exc for s in self.stores if (exc := s.failed) is not None}

    def stats(self) -> FleetStats:
        return FleetStats(
            [s.stats() for s in self.stores],
            rss_bytes=self._process.memory_info().rss,
            cpu_percent=self._process.cpu_percent(),
        )
