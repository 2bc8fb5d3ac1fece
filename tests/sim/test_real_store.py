"""The real-store scenario: its sizes and zones, an RF model that does what it claims
(fixed seeds, statistical bounds), and accuracy over the real LLRP bytes -> driver ->
engine path at 2,000 items."""

from __future__ import annotations

import statistics

import pytest

from bench.realstore import Phases, run_store
from simulators.llrp.world import World, WorldConfig
from simulators.scenario.model import RfidSection, ScenarioError, load_scenario, parse_scenario
from simulators.scenario.rfid_store import build_rfid_store
from tests.conftest import REPO_ROOT

REAL_STORE = REPO_ROOT / "examples" / "real-store.yaml"


def section() -> tuple[RfidSection, int]:
    scenario = load_scenario(REAL_STORE)
    rfid = scenario.stores[0].rfid
    assert rfid is not None
    return rfid, scenario.seed


def test_the_real_store_has_its_sizes_and_zones() -> None:
    rfid, seed = section()
    assert rfid.items >= 20_000
    assert len(rfid.readers) >= 6
    assert all(reader.antennas >= 4 for reader in rfid.readers)
    assert {reader.zone for reader in rfid.readers} == {"sales_floor", "backroom"}
    assert (rfid.rf.read_rate.low, rfid.rf.read_rate.high) == (0.3, 0.95)
    store = build_rfid_store(rfid, seed)
    assert len(store.world.items) == rfid.items
    shelves = [shelf for reader in store.readers for shelf in reader.shelves.values()]
    assert len(shelves) == len(set(shelves)) == rfid.antennas
    assert set(store.zones) == set(shelves)
    assert store.zones["back-1-a1"] == "backroom"
    assert store.zones["floor-1-a1"] == "sales_floor"
    per_shelf = [sum(1 for a in store.world.items.values() if a == n) for n in range(1, 25)]
    assert max(per_shelf) - min(per_shelf) <= 1


def test_a_bad_rfid_section_names_its_field() -> None:
    bad = {"stores": [{"id": "s-1", "rfid": {"readers": [{"id": "r", "zone": "roof"}]}}]}
    with pytest.raises(ScenarioError, match=r"stores\.0\.rfid\.readers\.0\.zone"):
        parse_scenario(bad)
    twice = {"id": "r", "zone": "backroom"}
    with pytest.raises(ScenarioError, match="unique"):
        parse_scenario({"stores": [{"id": "s-1", "rfid": {"readers": [twice, twice]}}]})


def _reads_per_tag(world: World, seconds: int, antenna_of: dict[str, int]) -> dict[str, list[bool]]:
    """Per tag, per cycle: read by its own antenna or not."""
    seen: dict[str, list[bool]] = {epc: [] for epc in antenna_of}
    for second in range(1, seconds + 1):
        got = {r.epc for r in world.cycle(float(second)) if r.antenna == antenna_of.get(r.epc)}
        for epc, row in seen.items():
            row.append(epc in got)
    return seen


def test_per_tag_read_rates_spread_and_are_what_each_tag_draws() -> None:
    world = World(
        WorldConfig(antennas=2, items_per_shelf=500, read_rate_low=0.3, read_rate_high=0.95)
    )
    rates = list(world.rates.values())
    assert 0.3 <= min(rates) < 0.33
    assert 0.92 < max(rates) <= 0.95
    deciles = statistics.quantiles(rates, n=10)
    assert deciles[0] < 0.4
    assert deciles[-1] > 0.85
    seen = _reads_per_tag(world, 200, dict(world.items))
    errors = [abs(sum(row) / len(row) - world.rates[epc]) for epc, row in seen.items()]
    assert statistics.fmean(errors) < 0.04  # each tag reads at its own rate


def test_fades_are_bursty_seconds_long_and_as_frequent_as_configured() -> None:
    config = WorldConfig(
        antennas=1, items_per_shelf=300, read_rate=0.9, fade_every_s=30.0, fade_mean_s=3.0,
        fade_read_rate=0.0, cross_read_rate=0.0,
    )  # fmt: skip
    world = World(config)
    seen = _reads_per_tag(world, 600, dict(world.items))
    misses = sum(row.count(False) for row in seen.values()) / (300 * 600)
    # time in a fade = 3 / (30 + 3) = 9 %; plus 10 % independent misses outside fades
    assert 0.15 < misses < 0.21
    runs = []
    for row in seen.values():
        run = 0
        for read in row:
            if read:
                if run:
                    runs.append(run)
                run = 0
            else:
                run += 1
    long_runs = sum(1 for r in runs if r >= 5)
    # independent misses at 0.1 would give a run >= 5 once in 10**5 positions (~2 here);
    # fades every ~30 s of mean 3 s give ~ 300 * 600 / 33 * exp(-4 / 3) ~ 1,400
    assert long_runs > 700
    assert 2.5 < statistics.fmean(r for r in runs if r >= 3) < 6.0


def test_boundary_items_are_read_by_two_antennas_at_similar_rssi() -> None:
    world = World(
        WorldConfig(antennas=3, items_per_shelf=200, boundary_share=0.2, cross_read_rate=0.0)
    )
    assert 0.15 < len(world.boundary) / len(world.items) < 0.25
    own: dict[str, list[int]] = {}
    neighbour: dict[str, list[int]] = {}
    for second in range(1, 101):
        for r in world.cycle(float(second)):
            if r.epc not in world.boundary:
                assert r.antenna == world.items[r.epc]  # no cross-reads configured
                continue
            side = own if r.antenna == world.items[r.epc] else neighbour
            assert r.antenna in (world.items[r.epc], world.boundary[r.epc])
            side.setdefault(r.epc, []).append(r.rssi)
    gaps = [
        statistics.fmean(own[e]) - statistics.fmean(neighbour[e]) for e in own if e in neighbour
    ]
    assert len(gaps) > 0.9 * len(world.boundary)
    assert 1.0 < statistics.fmean(gaps) < 3.0  # 2 dB weaker: nearly a tie
    ratio = sum(len(v) for v in neighbour.values()) / sum(len(v) for v in own.values())
    assert 0.8 < ratio < 1.0


def test_a_carried_item_is_read_along_its_path_and_off_every_shelf() -> None:
    world = World(WorldConfig(antennas=8, items_per_shelf=2, cross_read_rate=0.0))
    world.config.carry_read_rate = 1.0
    epc = next(e for e, a in world.items.items() if a == 1)
    world.carry(epc, 10.0, [3, 5, 7], dwell_s=2.0, to=1)
    assert epc not in world.truth()
    where = []
    for second in range(11, 19):
        where += [r.antenna for r in world.cycle(float(second)) if r.epc == epc]
    assert where[:6] == [3, 3, 5, 5, 7, 7]
    assert world.truth()[epc] == world.shelf(1)  # put back where it was
    assert [c.antenna for c in world.history if c.epc == epc] == [1, None, 1]


def test_a_reader_sees_its_own_antennas_numbered_from_one() -> None:
    rfid, seed = section()
    store = build_rfid_store(rfid, seed, items=480)
    reads = store.world.cycle(1.0)
    second = store.readers[1]
    local = second.view.local_reads(reads)
    assert {r.antenna for r in local} == {1, 2, 3, 4}
    assert {r.epc for r in local} <= {e for e, a in store.world.items.items() if 4 <= a <= 9}
    assert second.shelves[1] == store.world.shelf(5)


def test_accuracy_smoke_2000_items_through_llrp_bytes_driver_and_engine() -> None:
    """The bench's run at 2,000 items: six llrp drivers decode the readers' real report
    bytes into their engines; people carry items about for 20 s, then 40 s of quiet."""
    rfid, seed = section()
    run = run_store(rfid, seed, Phases(warmup_s=20, churn_s=20, quiet_s=40), items=2_000)
    assert run.quiet >= 0.99
    assert run.during_churn >= 0.98
    assert run.removals >= 3
    assert run.not_seen == 0  # every item taken for good departed
    assert max(run.delays) <= 30
