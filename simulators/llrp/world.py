"""A shelf world for the simulated reader: which tagged item is on which shelf, and what a
reader would read in one cycle.

One antenna per shelf, in a row: antenna i has neighbours i-1 and i+1. Each cycle every item
is read by its own antenna with probability `read_rate` (real readers: 60-70% per cycle)
at its own RSSI plus noise, and by each neighbouring antenna with `cross_read_rate` at a
lower RSSI. Items are added, removed and moved over time; antennas can fail. The world
records the ground truth: every change of where an item is, with its time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

COMPANY_PREFIX = 614141  # 7 digits: SGTIN-96 partition 5 (24-bit company, 20-bit item)


def sgtin96(item_reference: int, serial: int, company: int = COMPANY_PREFIX) -> str:
    """The hex EPC of an SGTIN-96 (filter 3 = retail item, partition 5)."""
    value = (0x30 << 88) | (3 << 85) | (5 << 82) | (company << 58) | (item_reference << 38)
    return f"{value | serial:024X}"


@dataclass(frozen=True, slots=True)
class TagRead:
    epc: str
    antenna: int
    rssi: int
    count: int
    first_seen_us: int
    last_seen_us: int
    channel: int


@dataclass(slots=True)
class WorldConfig:
    antennas: int = 4
    items_per_shelf: int = 20
    products_per_shelf: int = 4
    read_rate: float = 0.7
    rssi_own: float = -55.0
    rssi_spread: float = 4.0  # items sit nearer or farther from their antenna
    rssi_noise: float = 2.0
    cross_read_rate: float = 0.3
    cross_rssi_drop: float = 12.0
    seed: int = 1


@dataclass(slots=True)
class Change:
    t: float
    epc: str
    antenna: int | None  # None: left the shelves


@dataclass
class World:
    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.items: dict[str, int] = {}
        self.offsets: dict[str, float] = {}
        self.down: set[int] = set()
        self.history: list[Change] = []
        self._serial = 0
        for antenna in range(1, self.config.antennas + 1):
            for _ in range(self.config.items_per_shelf):
                self.add(antenna, 0.0)

    # ------------------------------------------------------------------ truth

    @staticmethod
    def shelf(antenna: int) -> str:
        return f"shelf-{antenna}"

    def shelves(self) -> dict[int, str]:
        return {a: self.shelf(a) for a in range(1, self.config.antennas + 1)}

    def truth(self) -> dict[str, str]:
        """EPC -> shelf of every item on a shelf now."""
        return {epc: self.shelf(antenna) for epc, antenna in self.items.items()}

    # ------------------------------------------------------------------ changes

    def add(self, antenna: int, t: float, product: int | None = None) -> str:
        self._serial += 1
        if product is None:
            product = self.rng.randrange(self.config.products_per_shelf)
        epc = sgtin96(1000 + antenna * 100 + product, self._serial)
        self.items[epc] = antenna
        self.offsets[epc] = self.rng.uniform(-self.config.rssi_spread, self.config.rssi_spread)
        self.history.append(Change(t, epc, antenna))
        return epc

    def remove(self, epc: str, t: float) -> None:
        del self.items[epc]
        self.history.append(Change(t, epc, None))

    def move(self, epc: str, antenna: int, t: float) -> None:
        self.items[epc] = antenna
        self.history.append(Change(t, epc, antenna))

    def churn(self, t: float, removes: int = 1, adds: int = 1, moves: int = 1) -> None:
        """Random shoppers and staff: take some items, stock some, misplace some."""
        antennas = self.config.antennas
        for _ in range(removes):
            if self.items:
                self.remove(self.rng.choice(sorted(self.items)), t)
        for _ in range(adds):
            self.add(self.rng.randint(1, antennas), t)
        for _ in range(moves):
            if self.items and antennas > 1:
                epc = self.rng.choice(sorted(self.items))
                target = self.rng.choice(
                    [a for a in range(1, antennas + 1) if a != self.items[epc]]
                )
                self.move(epc, target, t)

    # ------------------------------------------------------------------ reading

    def cycle(self, t: float, cycle_s: float = 1.0) -> list[TagRead]:
        """What the reader reads in the cycle that ends at t."""
        config = self.config
        rng = self.rng
        random_ = rng.random
        gauss = rng.gauss
        reads: list[TagRead] = []
        end_us = int(t * 1e6)
        start_us = int((t - cycle_s) * 1e6)
        for epc, antenna in self.items.items():
            base = config.rssi_own + self.offsets[epc]
            for candidate, rate, drop in (
                (antenna, config.read_rate, 0.0),
                (antenna - 1, config.cross_read_rate, config.cross_rssi_drop),
                (antenna + 1, config.cross_read_rate, config.cross_rssi_drop),
            ):
                if candidate < 1 or candidate > config.antennas or candidate in self.down:
                    continue
                if random_() >= rate:
                    continue
                rssi = round(base - drop + gauss(0.0, config.rssi_noise))
                first = rng.randint(start_us, end_us)
                reads.append(
                    TagRead(
                        epc, candidate, max(-127, min(0, rssi)), rng.randint(1, 4),
                        first, rng.randint(first, end_us), rng.randrange(50),
                    )
                )  # fmt: skip
        return reads
