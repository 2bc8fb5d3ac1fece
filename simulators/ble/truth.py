"""Zone accuracy against the simulator's ground truth.

Once a second, for every app shopper, compare the zone the presence engine holds for the
shopper's current token with the zone the shopper really is in. Seconds close to a real
zone change are not scored: presence is smoothed on purpose (EWMA, enter and exit
thresholds), so it lags reality by a few seconds by design; `grace_s` is that allowance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulators.ble.world import StoreSimulation

ZoneLookup = Callable[[str], str | None]


@dataclass(slots=True)
class ZoneScore:
    samples: int = 0
    correct: int = 0
    grace_skipped: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.samples if self.samples else 0.0


class ZoneScorer:
    def __init__(self, sim: StoreSimulation, grace_s: float = 6.0) -> None:
        self.sim = sim
        self.grace_s = grace_s
        self.score = ZoneScore()

    def sample(self, t: float, zone_of_beacon: ZoneLookup) -> None:
        for phone in self.sim.phones:
            beacon = phone.beacon_id(t)
            if beacon is None:
                continue
            truth = self.sim.true_zone(phone, t)
            near_change = any(
                self.sim.true_zone(phone, t + dt) != truth
                for dt in (-self.grace_s, -self.grace_s / 2, self.grace_s / 2)
            )
            if near_change:
                self.score.grace_skipped += 1
                continue
            self.score.samples += 1
            self.score.correct += zone_of_beacon(beacon) == truth
