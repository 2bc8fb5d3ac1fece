"""A real store: accuracy, removal detection and throughput of the LLRP path at store size.

The store is `examples/real-store.yaml`: 20,000 tagged items, six readers of four antennas
(sales floor and backroom), per-tag read rates spread 0.3-0.95, Gilbert-Elliott fades of
seconds, boundary items read by two antennas, people carrying items past readers. The path
measured is the production one from the bytes on: each reader's cycle is encoded as a real
RO_ACCESS_REPORT (simulator side, not timed), then decoded by the `llrp` driver and fed to
its presence engine (one driver and engine per reader, as the edge runs them). Time is
simulated (1 s read cycles), so a run of minutes takes seconds; the engine runs with its
defaults: it learns read rates online, nothing in it knows the simulator's parameters.

- accuracy: items on the right shelf (phantoms count against), every second through the
  churn (people carrying items off, putting some back, staff restocking) and at the end of a
  quiet spell; removal -> departed event, p50/p95;
- throughput: reads/s through decode + driver + engine, against the generic LLRP decoder
  alone on the same bytes (the path before the tag-report fast path);
- each figure is the median of 5 runs (different seeds), with min to max.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from bench.runner import Benchmark, Result, Row
from edge.rfid.driver import LlrpDriver, LlrpOptions
from edge.rfid.shelf_reader import share_tag_claims
from protocols.llrp import Message, Param, decode_body
from simulators.llrp.reader import tag_report_body
from simulators.llrp.world import TagRead
from simulators.scenario.model import RfidSection, load_scenario
from simulators.scenario.rfid_store import RfidStore, build_rfid_store

SCENARIO = Path(__file__).resolve().parents[1] / "examples" / "real-store.yaml"
TARGET_QUIET = 0.995
TARGET_CHURN = 0.990
TARGET_REMOVAL_P95_S = 15.0
TARGET_READS_PER_S = 50_000
RUNS = 5

_SELECTED = dict.fromkeys(
    (
        "EnableAntennaID",
        "EnablePeakRSSI",
        "EnableChannelIndex",
        "EnableFirstSeenTimestamp",
        "EnableLastSeenTimestamp",
        "EnableTagSeenCount",
    ),
    True,
)


def store_section() -> tuple[RfidSection, int]:
    scenario = load_scenario(SCENARIO)
    section = scenario.stores[0].rfid
    if section is None:
        raise RuntimeError(f"{SCENARIO} has no rfid section")
    return section, scenario.seed


def drivers_for(store: RfidStore) -> list[LlrpDriver]:
    """One `llrp` driver per reader, their engines sharing a claim table as the edge's
    `create_drivers` sets them up on one node."""
    drivers = [
        LlrpDriver(reader.id, LlrpOptions(antennas=reader.shelves)) for reader in store.readers
    ]
    share_tag_claims(drivers)
    return drivers


def encode_cycle(store: RfidStore, reads: list[TagRead]) -> list[bytes]:
    """Each reader's share of one cycle as an RO_ACCESS_REPORT body (what the wire carries)."""
    return [
        tag_report_body(reader.view.local_reads(reads), _SELECTED, 1) for reader in store.readers
    ]


@dataclass(slots=True)
class Phases:
    warmup_s: int
    churn_s: int
    quiet_s: int


# 240 s of churn: about 60 removals a run (15 a minute), so a run's p95 is not just its
# slowest removal
FULL = Phases(warmup_s=30, churn_s=240, quiet_s=45)
QUICK = Phases(warmup_s=15, churn_s=60, quiet_s=40)


@dataclass(slots=True)
class AccuracyRun:
    during_churn: float  # mean of per-second accuracy through the churn
    worst_second: float
    quiet: float  # at the end of the quiet spell
    delays: list[float]  # removal -> departed event, s
    removals: int  # items taken for good
    not_seen: int  # removals the engine had not noticed by the end
    reads: int
    feed_s: float  # wall time in decode + driver + engine


def item_accuracy(truth: dict[str, str], got: dict[str, str]) -> float:
    correct = sum(1 for epc, shelf in truth.items() if got.get(epc) == shelf)
    phantoms = sum(1 for epc in got if epc not in truth)
    return (correct - phantoms) / len(truth) if truth else 1.0


def run_store(
    section: RfidSection, seed: int, phases: Phases, items: int | None = None
) -> AccuracyRun:
    """One run in simulated time through the real decode + driver + engine."""
    store = build_rfid_store(section, seed, items)
    world = store.world
    drivers = drivers_for(store)
    per_minute = section.rf.carried_per_minute
    removed_at: dict[str, float] = {}
    delays: list[float] = []
    churn: list[float] = []
    reads = 0
    feed_s = 0.0
    removals = 0
    end = phases.warmup_s + phases.churn_s + phases.quiet_s
    owed = 0.0
    for second in range(1, end + 1):
        now = float(second)
        churning = phases.warmup_s < second <= phases.warmup_s + phases.churn_s
        if churning:
            owed += per_minute / 60
            while owed >= 1:
                owed -= 1
                # a shopper takes it (gone) or puts it back; staff restock what goes
                gone = store.rng.random() < 0.5
                epc = store.carry_one(now, back=not gone)
                if gone and epc is not None:
                    removed_at[epc] = now
                    removals += 1
                    store.restock_one(now)
        cycle = world.cycle(now)
        bodies = encode_cycle(store, cycle)
        started = time.perf_counter()
        for driver, body in zip(drivers, bodies, strict=True):
            reads += driver.feed_report_body(body, now - 0.5)
            driver.engine.tick(now)
        feed_s += time.perf_counter() - started
        for driver in drivers:
            for event in driver.engine.drain_events():
                if event.kind.value == "departed" and event.epc in removed_at:
                    delays.append(now - removed_at.pop(event.epc))
            driver.engine.drain_counts()
        if churning:
            churn.append(item_accuracy(world.truth(), merged_items(drivers)))
    return AccuracyRun(
        during_churn=statistics.fmean(churn) if churn else float("nan"),
        worst_second=min(churn) if churn else float("nan"),
        quiet=item_accuracy(world.truth(), merged_items(drivers)),
        delays=sorted(delays),
        removals=removals,
        not_seen=len(removed_at),
        reads=reads,
        feed_s=feed_s,
    )


def merged_items(drivers: list[LlrpDriver]) -> dict[str, str]:
    items: dict[str, str] = {}
    for driver in drivers:
        items.update(driver.engine.items())
    return items


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def throughput(section: RfidSection, seed: int, seconds: int) -> tuple[float, float, int]:
    """(reads/s through decode + driver + engine, reads/s of the generic decoder walking
    the same bytes, reads per run) over `seconds` recorded cycles of the whole store."""
    store = build_rfid_store(section, seed)
    recorded = [encode_cycle(store, store.world.cycle(float(s))) for s in range(1, seconds + 1)]
    drivers = drivers_for(store)
    count = 0
    started = time.perf_counter()
    for second, bodies in enumerate(recorded, start=1):
        for driver, body in zip(drivers, bodies, strict=True):
            count += driver.feed_report_body(body, second - 0.5)
            driver.engine.tick(float(second))
    ours = count / (time.perf_counter() - started)
    started = time.perf_counter()
    walked = 0
    for bodies in recorded:
        for body in bodies:
            walked += _walk_generic(decode_body(61, body))
    generic = walked / (time.perf_counter() - started)
    return ours, generic, count


def _walk_generic(report: Message) -> int:
    """What the driver did before the fast path: a Param tree, then a walk of it."""
    n = 0
    for tag in report.children:
        if isinstance(tag, Param) and tag.type == 240:
            for p in tag.children:
                if isinstance(p, Param) and p.type in (1, 6, 13):
                    n += p.type == 13
    return n


def _median_row(metric: str, values: list[float], unit: str, **kwargs: object) -> tuple[Row, float]:
    median = statistics.median(values)
    row = Row(metric, median, unit, spread=(min(values), max(values)), **kwargs)  # type: ignore[arg-type]
    return row, median


def run(quick: bool) -> Result:
    section, seed = store_section()
    phases = QUICK if quick else FULL
    runs = [run_store(section, seed + i, phases) for i in range(RUNS)]
    rates = [throughput(section, seed + i, 5 if quick else 10) for i in range(RUNS)]
    churn_row, churn = _median_row(
        "accuracy during churn (every second, mean)",
        [r.during_churn * 100 for r in runs],
        "%",
        target=f">= {TARGET_CHURN * 100:.1f} %",
    )
    churn_row.passed = churn >= TARGET_CHURN * 100
    worst_row, _ = _median_row(
        "accuracy during churn, worst second", [r.worst_second * 100 for r in runs], "%"
    )
    quiet_row, quiet = _median_row(
        f"accuracy after {phases.quiet_s} s of quiet",
        [r.quiet * 100 for r in runs],
        "%",
        target=f">= {TARGET_QUIET * 100:.1f} %",
    )
    quiet_row.passed = quiet >= TARGET_QUIET * 100
    p50_row, _ = _median_row(
        "removal -> departed p50", [percentile(r.delays, 0.5) for r in runs], "s"
    )
    p95_row, p95 = _median_row(
        "removal -> departed p95",
        [percentile(r.delays, 0.95) for r in runs],
        "s",
        target=f"<= {TARGET_REMOVAL_P95_S:.0f} s",
    )
    p95_row.passed = p95 <= TARGET_REMOVAL_P95_S
    pooled = [delay for r in runs for delay in r.delays]
    pooled_row = Row(
        f"removal -> departed p95, the {len(pooled)} removals of all runs pooled",
        percentile(pooled, 0.95),
        "s",
    )
    ours = [r[0] for r in rates]
    generic = statistics.median(r[1] for r in rates)
    tput_row, tput = _median_row(
        "reads/s through LLRP decode + driver + engine (1 core)",
        ours,
        "reads/s",
        baseline=generic,
        baseline_name="generic LLRP decoder alone, same bytes",
        target=f">= {TARGET_READS_PER_S:,} reads/s",
    )
    tput_row.passed = tput >= TARGET_READS_PER_S
    pipeline_row, _ = _median_row(
        "reads/s through the same path during the accuracy runs",
        [r.reads / r.feed_s for r in runs],
        "reads/s",
    )
    rows = [churn_row, worst_row, quiet_row, p50_row, p95_row, pooled_row, tput_row, pipeline_row]
    items = len(build_rfid_store(section, seed).world.items)
    notes = [
        f"{items:,} items, {len(section.readers)} readers x 4 antennas "
        f"({', '.join(f'{r.id} {r.zone}' for r in section.readers)}); per-tag read rates "
        f"{section.rf.read_rate.low}-{section.rf.read_rate.high}, fades every "
        f"{section.rf.fade_every_s:.0f} s of {section.rf.fade_mean_s:.0f} s mean per tag, "
        f"{section.rf.boundary_share:.0%} boundary items, {section.rf.carried_per_minute:.0f} "
        "items/min carried past readers in churn (half taken for good and restocked, half "
        "put back)",
        f"each run: {phases.warmup_s} s warm-up, {phases.churn_s} s churn (scored every second), "
        f"{phases.quiet_s} s quiet (scored at its end); simulated time; median of {RUNS} runs "
        "(seeds differ), min to max in brackets",
        f"removals per run: {statistics.median(r.removals for r in runs):.0f} "
        f"({min(r.removals for r in runs)} to {max(r.removals for r in runs)}), "
        f"{len(pooled)} departed over all runs, not yet departed at the end: "
        f"{sum(r.not_seen for r in runs)}; a run's p95 is its 3rd or 4th slowest removal, "
        "the pooled p95 rests on all of them",
        "removal rule: a tag whose own antenna goes quiet while another reads it (two reads "
        "beating its own by the decaying offset, or one louder by the full 6 dB) is in "
        "transit: still counted on its shelf, it moves only once it settles on the other "
        "antenna (as an arrival does), and departs after transit_window = 5 silent epochs "
        "instead of its read-rate window (23 at p = 0.3); a tag silent in place (a fade) "
        "keeps the long window. p95 <= 15 s is not met: the slowest removals are those "
        "with too little evidence (carried past other antennas for fewer than two reads, "
        "the one read heard by another reader, whose engine alone sees it, or a walk "
        "ending at its own antenna read as on the shelf); they still wait the long window",
        "measured on a 2-core machine shared with other jobs at the same time (loaded): "
        "absolute figures are pessimistic, ratios less so",
        "throughput: "
        f"{statistics.median(r[2] for r in rates):,.0f} reads of recorded whole-store cycles, "
        "RO_ACCESS_REPORT bodies -> tag_reads -> LlrpDriver.feed_report_body -> "
        "PresenceEngine.observe/tick; the baseline decodes the same bodies into Param trees "
        "and walks them, without any engine",
    ]
    return Result(rows, notes)


BENCHMARK = Benchmark(name="realstore", title="A real store: 20,000 items, six readers", run=run)
