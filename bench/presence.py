"""Presence engine: reads/s on one core, and accuracy against the simulator's ground truth.

Throughput is compared with a bare loop that only appends each read to a per-tag list (the
least any consumer of raw reads does), measured in the same run on the same reads.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from bench.runner import Benchmark, Result, Row
from edge.rfid.presence import PresenceEngine
from protocols.llrp import decode_message, encode_message
from protocols.messages import ItemEventKind
from simulators.llrp.reader import tag_report
from simulators.llrp.world import World, WorldConfig

TARGET_READS_PER_S = 50_000
TARGET_ACCURACY = 0.995


def _reads(seconds: int, shelves: int, items: int) -> list[tuple[str, int, float, float]]:
    world = World(WorldConfig(antennas=shelves, items_per_shelf=items, seed=11))
    out: list[tuple[str, int, float, float]] = []
    for second in range(1, seconds + 1):
        out += [(r.epc, r.antenna, float(r.rssi), second - 0.5) for r in world.cycle(float(second))]
    return out


def _baseline(reads: list[tuple[str, int, float, float]]) -> float:
    start = time.perf_counter()
    per_tag: dict[str, list[tuple[int, float, float]]] = {}
    for epc, antenna, rssi, t in reads:
        bucket = per_tag.get(epc)
        if bucket is None:
            bucket = per_tag[epc] = []
        bucket.append((antenna, rssi, t))
    return len(reads) / (time.perf_counter() - start)


def _engine(reads: list[tuple[str, int, float, float]], shelves: int) -> float:
    engine = PresenceEngine({a: f"shelf-{a}" for a in range(1, shelves + 1)})
    observe = engine.observe
    tick = engine.tick
    last_second = 0
    start = time.perf_counter()
    for epc, antenna, rssi, t in reads:
        if t > last_second:
            last_second = int(t) + 1
            tick(float(last_second - 1))
        observe(epc, antenna, rssi, t)
    engine.drain_events()
    engine.drain_counts()
    return len(reads) / (time.perf_counter() - start)


def _decode_rate(shelves: int, items: int) -> tuple[float, int]:
    """Tags per second through the LLRP codec: one RO_ACCESS_REPORT of a whole cycle."""
    world = World(WorldConfig(antennas=shelves, items_per_shelf=items, seed=13))
    reads = world.cycle(1.0)
    frame = encode_message(tag_report(reads, dict.fromkeys(_SELECTED, True), 1))
    rounds = 10
    start = time.perf_counter()
    for _ in range(rounds):
        decode_message(frame)
    return rounds * len(reads) / (time.perf_counter() - start), len(reads)


_SELECTED = (
    "EnableAntennaID",
    "EnablePeakRSSI",
    "EnableChannelIndex",
    "EnableFirstSeenTimestamp",
    "EnableLastSeenTimestamp",
    "EnableTagSeenCount",
)


@dataclass(slots=True)
class _Accuracy:
    settled: float  # item-level accuracy after 90 s without changes
    during_churn: float  # mean of per-second accuracy while items change (includes lag)
    delays: list[float]  # removal -> departed event, seconds
    reduction: float  # raw reads in per message out
    spurious_moves: float  # moved events without a real move, per arrival


def _item_accuracy(world: World, engine: PresenceEngine) -> float:
    truth = world.truth()
    got = engine.items()
    correct = sum(1 for epc, shelf in truth.items() if got.get(epc) == shelf)
    wrong = len(set(got) - set(truth))  # phantoms count against it too
    return (correct - wrong) / len(truth)


def _accuracy(seconds: int) -> _Accuracy:
    world = World(WorldConfig(antennas=8, items_per_shelf=60, read_rate=0.7, seed=5))
    engine = PresenceEngine(world.shelves())
    removed_at: dict[str, float] = {}
    delays: list[float] = []
    reads_in = 0
    messages_out = 0
    moved_at: dict[str, float] = {}
    arrivals = 0
    spurious_moves = 0
    samples: list[float] = []
    for second in range(1, seconds + 1):
        now = float(second)
        if second % 10 == 0 and second < seconds - 90:
            for epc in sorted(world.items)[:: max(1, len(world.items) // 3)][:3]:
                world.remove(epc, now)
                removed_at[epc] = now
            world.churn(now, removes=0, adds=3, moves=2)
            moved_at.update((c.epc, now) for c in world.history if c.t == now)
        reads = world.cycle(now)
        reads_in += len(reads)
        for r in reads:
            engine.observe(r.epc, r.antenna, float(r.rssi), now - 0.5)
        engine.tick(now)
        if 30 <= second < seconds - 90:
            samples.append(_item_accuracy(world, engine))
        if second % 2 == 0:  # one RfidEvents message per 2 s report interval, if any
            events = engine.drain_events()
            counts = engine.drain_counts()
            if events or counts:
                messages_out += 1
            for ev in events:
                arrivals += ev.kind is ItemEventKind.ARRIVED
                if ev.kind is ItemEventKind.MOVED and now - moved_at.get(ev.epc, -1e9) > 60:
                    spurious_moves += 1  # no real move of that item in the last minute
                if ev.kind is ItemEventKind.DEPARTED and ev.epc in removed_at:
                    delays.append(ev.at.timestamp() - removed_at.pop(ev.epc))
    return _Accuracy(
        settled=_item_accuracy(world, engine),
        during_churn=statistics.fmean(samples),
        delays=sorted(delays),
        reduction=reads_in / max(1, messages_out),
        spurious_moves=spurious_moves / max(1, arrivals),
    )


def run(quick: bool) -> Result:
    shelves, items = 8, 250
    reads = _reads(20 if quick else 60, shelves, items)
    repeats = 3 if quick else 5
    engine_rate = max(_engine(reads, shelves) for _ in range(repeats))
    baseline_rate = max(_baseline(reads) for _ in range(repeats))
    decode_rate, report_tags = _decode_rate(shelves, items)
    acc = _accuracy(300 if quick else 900)
    delays = acc.delays
    p95 = delays[min(len(delays) - 1, int(0.95 * len(delays)))] if delays else float("nan")
    rows = [
        Row(
            "engine throughput (1 core)",
            engine_rate,
            "reads/s",
            baseline=baseline_rate,
            baseline_name="append reads to a dict per tag",
            target=f">= {TARGET_READS_PER_S:,} reads/s",
            passed=engine_rate >= TARGET_READS_PER_S,
        ),
        Row(
            "LLRP RO_ACCESS_REPORT decode",
            decode_rate,
            "tags/s",
            target=">= 1,100 tags/s (a fixed reader's maximum)",
            passed=decode_rate >= 1_100,
        ),
        Row(
            "item-level accuracy (read rate 0.7, cross-reads)",
            acc.settled * 100,
            "%",
            target=f">= {TARGET_ACCURACY * 100:.1f} %",
            passed=acc.settled >= TARGET_ACCURACY,
        ),
        Row("accuracy while items change (incl. detection lag)", acc.during_churn * 100, "%"),
        Row("removal detected p50", statistics.median(delays) if delays else float("nan"), "s"),
        Row("removal detected p95", p95, "s"),
        Row("reduction (raw reads in / messages out)", acc.reduction, "x"),
        Row("spurious moved events per arrival", acc.spurious_moves * 100, "%"),
    ]
    notes = [
        f"{len(reads):,} simulated reads ({shelves} shelves x {items} items, read rate 0.7, "
        "cross-read rate 0.3 at -12 dB); best of "
        f"{repeats} runs",
        f"decode: one report of {report_tags:,} tags with AntennaID, PeakRSSI, ChannelIndex, "
        "First/LastSeen, TagSeenCount",
        f"accuracy run: 8 shelves x 60 items, 3 removals + 3 additions + 2 moves every 10 s, "
        f"{len(delays)} removals timed; measured after 90 s without changes",
    ]
    return Result(rows, notes)


BENCHMARK = Benchmark(name="presence", title="RFID shelf presence engine", run=run)
