"""A shelf world for the simulated reader: which tagged item is on which shelf, and what a
reader would read in one cycle.

One antenna per shelf, in a row: antenna i has neighbours i-1 and i+1. Each cycle every item
is read by its own antenna with probability `read_rate` (real readers: 60-70% per cycle)
at its own RSSI plus noise, and by each neighbouring antenna with `cross_read_rate` at a
lower RSSI. Items are added, removed and moved over time; antennas can fail. The world
records the ground truth: every change of where an item is, with its time.

RF as studies of fixed readers report it (all off by default, so small worlds stay the
forgiving ones older tests were written for):
- per-tag read rates: each item draws its own rate, uniform in [read_rate_low,
  read_rate_high] (tag orientation, distance, the item's material);
- bursty fades: a two-state (Gilbert-Elliott) channel per tag in continuous time: good
  spells of mean `fade_every_s`, fades of mean `fade_mean_s` (exponential), during which
  the tag reads with `fade_read_rate` on every antenna (behind metal, under other items);
- boundary items: a share `boundary_share` of items sit between their antenna and a
  neighbour, which reads them at nearly the same rate and `boundary_rssi_drop` dB weaker;
- people carrying items past readers: `carry()` takes an item off its shelf and has it read
  strongly by a series of antennas, `dwell_s` each, before it leaves or lands somewhere.
A store with several readers is one world with all their antennas; `ReaderView` is what one
reader sees of it (its own antennas, numbered from 1).
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
    read_rate_low: float | None = None  # per-tag rates uniform in [low, high]; None: read_rate
    read_rate_high: float | None = None
    fade_every_s: float = 0.0  # mean good spell per tag; 0: no fades
    fade_mean_s: float = 3.0
    fade_read_rate: float = 0.02
    boundary_share: float = 0.0
    boundary_rssi_drop: float = 2.0
    carry_read_rate: float = 0.8
    shelf_names: dict[int, str] | None = None  # antenna -> shelf id; None: shelf-<antenna>

    def __post_init__(self) -> None:
        if (self.read_rate_low is None) != (self.read_rate_high is None):
            raise ValueError("read_rate_low and read_rate_high go together")
        low, high = self.read_rate_low, self.read_rate_high
        if low is not None and high is not None and not 0 < low <= high <= 1:
            raise ValueError("need 0 < read_rate_low <= read_rate_high <= 1")
        if self.fade_every_s < 0 or self.fade_mean_s <= 0:
            raise ValueError("need fade_every_s >= 0 and fade_mean_s > 0")
        if not 0 <= self.boundary_share <= 1:
            raise ValueError("boundary_share must be in [0, 1]")


@dataclass(slots=True)
class Change:
    t: float
    epc: str
    antenna: int | None  # None: left the shelves


@dataclass(slots=True)
class _Carried:
    start: float
    dwell_s: float
    path: list[int]
    to: int | None  # lands on this antenna's shelf at the end; None: leaves the store


@dataclass
class World:
    config: WorldConfig = field(default_factory=WorldConfig)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)
        self.items: dict[str, int] = {}
        self.offsets: dict[str, float] = {}
        self.down: set[int] = set()
        self.history: list[Change] = []
        self.rates: dict[str, float] = {}  # per-tag read rates (RF model on)
        self.fades: dict[str, list[float]] = {}  # epc -> [fade start, fade end]
        self.boundary: dict[str, int] = {}  # epc -> the neighbour that reads it too
        self.carried: dict[str, _Carried] = {}
        self._serial = 0
        self._shared_slot = -1
        self._shared: list[TagRead] = []
        for antenna in range(1, self.config.antennas + 1):
            for _ in range(self.config.items_per_shelf):
                self.add(antenna, 0.0)

    # ------------------------------------------------------------------ truth

    def shelf(self, antenna: int) -> str:
        names = self.config.shelf_names
        return names[antenna] if names is not None else f"shelf-{antenna}"

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
        self._draw_rf(epc, antenna, t)
        self.history.append(Change(t, epc, antenna))
        return epc

    def _draw_rf(self, epc: str, antenna: int, t: float) -> None:
        config = self.config
        rng = self.rng
        if config.read_rate_low is not None and config.read_rate_high is not None:
            self.rates[epc] = rng.uniform(config.read_rate_low, config.read_rate_high)
        if config.fade_every_s > 0:
            start = t + rng.expovariate(1 / config.fade_every_s)
            self.fades[epc] = [start, start + rng.expovariate(1 / config.fade_mean_s)]
        self.boundary.pop(epc, None)
        if config.boundary_share > 0 and rng.random() < config.boundary_share:
            neighbours = [a for a in (antenna - 1, antenna + 1) if 1 <= a <= config.antennas]
            if neighbours:
                self.boundary[epc] = rng.choice(neighbours)

    def rate_of(self, epc: str) -> float:
        """The tag's read rate outside fades on its own antenna."""
        return self.rates.get(epc, self.config.read_rate)

    def fading(self, epc: str, t: float) -> bool:
        """Whether the tag is in a fade at t (advances its channel to t)."""
        window = self.fades.get(epc)
        if window is None:
            return False
        config = self.config
        if t - window[1] > 100 * (config.fade_every_s + config.fade_mean_s):
            # a clock jump (a world built at t = 0 read at wall-clock time): the channel
            # forgets, rather than replaying decades of fades
            window[0] = t + self.rng.expovariate(1 / config.fade_every_s)
            window[1] = window[0] + self.rng.expovariate(1 / config.fade_mean_s)
            return False
        while t >= window[1]:
            start = window[1] + self.rng.expovariate(1 / config.fade_every_s)
            window[0], window[1] = start, start + self.rng.expovariate(1 / config.fade_mean_s)
        return t >= window[0]

    def carry(
        self, epc: str, t: float, path: list[int], dwell_s: float = 1.0, to: int | None = None
    ) -> None:
        """Someone takes the item off its shelf at t and walks it past `path` (antennas,
        `dwell_s` in reach of each); then it lands on antenna `to`'s shelf, or is gone."""
        if epc in self.items:
            self.remove(epc, t)
        self.carried[epc] = _Carried(t, dwell_s, list(path), to)

    def remove(self, epc: str, t: float) -> None:
        del self.items[epc]
        self.history.append(Change(t, epc, None))

    def move(self, epc: str, antenna: int, t: float) -> None:
        self.items[epc] = antenna
        if epc in self.boundary:  # a new place: maybe no longer between two antennas
            self._draw_rf_place(epc, antenna)
        self.history.append(Change(t, epc, antenna))

    def _draw_rf_place(self, epc: str, antenna: int) -> None:
        del self.boundary[epc]
        config = self.config
        if self.rng.random() < config.boundary_share:
            neighbours = [a for a in (antenna - 1, antenna + 1) if 1 <= a <= config.antennas]
            if neighbours:
                self.boundary[epc] = self.rng.choice(neighbours)

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
        rates = self.rates
        fades = self.fades
        boundary = self.boundary
        fading = self.fading
        down = self.down
        for epc, antenna in self.items.items():
            base = config.rssi_own + self.offsets[epc]
            rate = rates.get(epc, config.read_rate) if rates else config.read_rate
            cross_rate = config.cross_read_rate
            if fades and fading(epc, t):
                rate = cross_rate = config.fade_read_rate
            candidates = [
                (antenna, rate, 0.0),
                (antenna - 1, cross_rate, config.cross_rssi_drop),
                (antenna + 1, cross_rate, config.cross_rssi_drop),
            ]
            neighbour = boundary.get(epc) if boundary else None
            if neighbour is not None:
                # between two antennas: the neighbour reads it nearly as well, nearly as loud
                candidates = [
                    candidates[0],
                    (neighbour, rate * 0.9, config.boundary_rssi_drop),
                    *(c for c in candidates[1:] if c[0] != neighbour),
                ]
            for candidate, p, drop in candidates:
                if candidate < 1 or candidate > config.antennas or candidate in down:
                    continue
                if random_() >= p:
                    continue
                rssi = round(base - drop + gauss(0.0, config.rssi_noise))
                first = rng.randint(start_us, end_us)
                reads.append(
                    TagRead(
                        epc, candidate, max(-127, min(0, rssi)), rng.randint(1, 4),
                        first, rng.randint(first, end_us), rng.randrange(50),
                    )
                )  # fmt: skip
        if self.carried:
            reads += self._carried_reads(t, cycle_s, start_us, end_us)
        return reads

    def _carried_reads(self, t: float, cycle_s: float, start_us: int, end_us: int) -> list[TagRead]:
        config = self.config
        rng = self.rng
        reads: list[TagRead] = []
        mid = t - cycle_s / 2
        for epc, walk in list(self.carried.items()):
            leg = int((mid - walk.start) // walk.dwell_s)
            if leg >= len(walk.path):
                del self.carried[epc]
                if walk.to is not None:
                    self.items[epc] = walk.to
                    self.history.append(Change(walk.start + leg * walk.dwell_s, epc, walk.to))
                continue
            antenna = walk.path[leg] if leg >= 0 else 0
            if antenna < 1 or antenna > config.antennas or antenna in self.down:
                continue
            if rng.random() >= config.carry_read_rate:
                continue
            # held up close: louder than anything on a shelf
            rssi = round(config.rssi_own + 6 + rng.gauss(0.0, config.rssi_noise))
            first = rng.randint(start_us, end_us)
            reads.append(
                TagRead(
                    epc, antenna, max(-127, min(0, rssi)), 1, first, rng.randint(first, end_us),
                    rng.randrange(50),
                )
            )  # fmt: skip
        return reads

    def shared_cycle(self, t: float, cycle_s: float = 1.0) -> list[TagRead]:
        """One cycle of the whole world per `cycle_s` slot, however many readers ask: the
        readers of one store read the same tags at the same time."""
        slot = int(t // cycle_s)
        if slot != self._shared_slot:
            self._shared_slot = slot
            self._shared = self.cycle(t, cycle_s)
        return self._shared

    def view(self, first: int, count: int) -> ReaderView:
        """What one reader of a multi-reader store sees: antennas first..first+count-1."""
        return ReaderView(self, first, count)


class ReaderView:
    """One reader's antennas of a store world, numbered 1..count as that reader numbers
    them. The simulated reader reads through it; changes go to the world."""

    def __init__(self, world: World, first: int, count: int) -> None:
        if first < 1 or first + count - 1 > world.config.antennas:
            raise ValueError(f"antennas {first}..{first + count - 1} are not in the world")
        self.world = world
        self.first = first
        self.config = WorldConfig(antennas=count)  # what the reader reports of itself
        self.down: set[int] = set()

    def shelves(self) -> dict[int, str]:
        return {a: self.world.shelf(a + self.first - 1) for a in range(1, self.config.antennas + 1)}

    def local_reads(self, reads: list[TagRead]) -> list[TagRead]:
        """This reader's share of a whole-world cycle, with its own antenna numbers."""
        low = self.first
        high = self.first + self.config.antennas - 1
        shift = self.first - 1
        down = self.down
        return [
            TagRead(r.epc, r.antenna - shift, r.rssi, r.count, r.first_seen_us, r.last_seen_us,
                    r.channel)
            for r in reads
            if low <= r.antenna <= high and (r.antenna - shift) not in down
        ]  # fmt: skip

    def cycle(self, t: float, cycle_s: float = 1.0) -> list[TagRead]:
        return self.local_reads(self.world.shared_cycle(t, cycle_s))
