"""A store-sized RFID deployment from a scenario's `rfid:` section: one `World` holding every
antenna of every reader (so a carried item passes readers, and a boundary item is read by
two antennas), what each reader sees of it, and the people who carry items about.

Shelf ids are `<reader id>-a<n>`; the zone of each shelf comes from its reader.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from simulators.llrp.world import ReaderView, World, WorldConfig
from simulators.scenario.model import RfidSection

COMPANY_ITEM_BASE = 1000


@dataclass(frozen=True, slots=True)
class StoreReader:
    id: str
    zone: str
    first_antenna: int  # in the store world
    view: ReaderView

    @property
    def shelves(self) -> dict[int, str]:
        """The reader's antenna id -> shelf id (what its edge driver is configured with)."""
        return self.view.shelves()


@dataclass
class RfidStore:
    section: RfidSection
    world: World
    readers: list[StoreReader]
    zones: dict[str, str]  # shelf id -> zone
    rng: random.Random = field(default_factory=random.Random)

    def carry_one(self, t: float, *, back: bool = False) -> str | None:
        """Someone picks an item up and walks it past a few antennas (possibly of other
        readers): it is gone (bought, or taken to the fitting rooms), or, with `back`, put
        back where it was. Returns its EPC."""
        world = self.world
        if not world.items:
            return None
        rf = self.section.rf
        epc = self.rng.choice(list(world.items))
        home = world.items[epc]
        passes = round(self.rng.uniform(rf.carry_antennas.low, rf.carry_antennas.high))
        path = [home]
        for _ in range(max(0, passes - 1)):
            step = self.rng.choice((-1, 1)) * self.rng.randint(1, 3)
            path.append(min(world.config.antennas, max(1, path[-1] + step)))
        dwell = self.rng.uniform(rf.carry_dwell_s.low, rf.carry_dwell_s.high)
        world.carry(epc, t, path[1:] or path, dwell, to=home if back else None)
        return epc

    def restock_one(self, t: float) -> str:
        """Staff put a new item on a sales-floor shelf."""
        floor = [a for a, shelf in self.shelf_of().items() if self.zones[shelf] == "sales_floor"]
        antenna = self.rng.choice(floor or list(self.shelf_of()))
        return self.world.add(antenna, t)

    def shelf_of(self) -> dict[int, str]:
        return {a: self.world.shelf(a) for a in range(1, self.world.config.antennas + 1)}


def build_rfid_store(
    section: RfidSection, seed: int = 1, items: int | None = None, t0: float = 0.0
) -> RfidStore:
    """The store world with `items` (default: the section's) spread evenly over antennas,
    stocked at time `t0` (simulated time starts at 0; a live simulator passes the clock)."""
    total = section.items if items is None else items
    names: dict[int, str] = {}
    zones: dict[str, str] = {}
    spans: list[tuple[str, str, int, int]] = []
    antenna = 1
    for reader in section.readers:
        spans.append((reader.id, reader.zone, antenna, reader.antennas))
        for n in range(1, reader.antennas + 1):
            names[antenna] = f"{reader.id}-a{n}"
            zones[names[antenna]] = reader.zone
            antenna += 1
    antennas = antenna - 1
    rf = section.rf
    world = World(
        WorldConfig(
            antennas=antennas,
            items_per_shelf=0,
            products_per_shelf=section.products_per_antenna,
            cross_read_rate=rf.cross_read_rate,
            seed=seed,
            read_rate_low=rf.read_rate.low,
            read_rate_high=rf.read_rate.high,
            fade_every_s=rf.fade_every_s,
            fade_mean_s=rf.fade_mean_s,
            fade_read_rate=rf.fade_read_rate,
            boundary_share=rf.boundary_share,
            boundary_rssi_drop=rf.boundary_rssi_drop_db,
            shelf_names=names,
        )
    )
    for i in range(total):
        world.add(1 + i % antennas, t0)
    world.history.clear()
    readers = [
        StoreReader(reader_id, zone, first, world.view(first, count))
        for reader_id, zone, first, count in spans
    ]
    return RfidStore(section, world, readers, zones, random.Random(seed + 1))
