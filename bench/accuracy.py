"""RFID shelves end to end: the CLOUD's inventory against the simulator's ground truth.

One process, one event loop: a simulated LLRP reader (TCP) → the real `sim-llrp` driver and
presence engine in the real edge runtime (durable outbox) → a real Mosquitto → the real
cloud runtime (ack-after-commit ingest into SQLite, inventory domain). Read rate 0.7 per
cycle, cross-reads on neighbouring antennas, real time (1 s read cycles, the default
presence rules). Shoppers take items and staff restock during a churn phase; then the
system gets a quiet period to settle and is measured:

- accuracy of the cloud's per-(shelf, GTIN) counts vs the truth; baseline: the edge
  presence engine's own counts at the same moment (what reached the uplink). The ratio
  shows what the uplink and the cloud lose (1.00 = nothing);
- removal → the cloud's count change (the live-change bus, what the dashboard sees),
  p50/p95; and the part of it after the edge decided (engine output → cloud);
- reduction: raw tag reads → uplink RFID messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from bench._support import Mosquitto
from bench.runner import Benchmark, Result, Row
from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from cloud.state import schema
from edge.config import EdgeSettings, create_drivers
from edge.rfid.epc import decode_epc
from edge.runtime import EdgeRuntime
from protocols.messages import CountDelta
from simulators.drivers.llrp import SimLlrpDriver
from simulators.llrp.world import World

STORE, NODE, READER = "store-acc", "pi-1", "reader-1"
TARGET_ACCURACY = 0.995
TARGET_EDGE_TO_CLOUD_S = 1.0

Counts = dict[tuple[str, str], int]


@dataclass(frozen=True, slots=True)
class Plan:
    shelves: int
    items_per_shelf: int
    warmup_s: float
    rounds: int
    round_s: float
    removals: int  # per round
    adds: int
    moves: int
    quiet_s: float  # no changes before measuring: > the departure window (10 s at 0.7)


QUICK = Plan(8, 40, 6, 7, 3, 2, 1, 0, 16)
FULL = Plan(8, 60, 10, 24, 5, 3, 2, 1, 30)


def count_accuracy(got: Mapping[tuple[str, str], int], truth: Counts) -> float:
    """Item-level accuracy from counts: items counted on the right (shelf, GTIN), minus
    phantoms (counted but not there), over the items really there."""
    total = sum(truth.values())
    matched = sum(min(got.get(k, 0), n) for k, n in truth.items())
    phantoms = sum(max(0, n - truth.get(k, 0)) for k, n in got.items())
    return (matched - phantoms) / total if total else 1.0


def truth_counts(world: World) -> Counts:
    counts: Counter[tuple[str, str]] = Counter()
    for epc, shelf in world.truth().items():
        gtin = decode_epc(epc).gtin
        if gtin is not None:
            counts[(shelf, gtin)] += 1
    return dict(counts)


@dataclass
class _Removal:
    pair: tuple[str, str]
    before: int  # the cloud must show fewer than this
    at: float  # wall clock of the removal in the simulator
    decided_at: float | None = None  # the engine handed out the lower count
    seen_at: float | None = None  # the cloud's live bus announced it


@dataclass
class _Tracker:
    """Watches the engine's output and the cloud's live bus for the pending removals."""

    pending: dict[tuple[str, str], _Removal] = field(default_factory=dict)
    done: list[_Removal] = field(default_factory=list)

    def decided(self, counts: list[CountDelta]) -> None:
        now = time.time()
        for delta in counts:
            removal = self.pending.get((delta.shelf, delta.gtin))
            if removal and removal.decided_at is None and delta.count < removal.before:
                removal.decided_at = now

    def seen(self, items: list[dict[str, Any]]) -> None:
        now = time.time()
        for item in items:
            pair = (item["shelf"], item["gtin"])
            removal = self.pending.get(pair)
            if removal and item["count"] < removal.before:
                removal.seen_at = now
                self.done.append(self.pending.pop(pair))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _cloud_counts(runtime: CloudRuntime) -> Counts:
    t = schema.inventory
    async with runtime.engine.connect() as connection:
        rows = (
            await connection.execute(
                select(t.c.shelf, t.c.gtin, t.c["count"]).where(t.c.store_id == STORE)
            )
        ).all()
    return {(r.shelf, r.gtin): r._mapping["count"] for r in rows if r._mapping["count"]}


async def _measure(plan: Plan, workdir: Path, port: int) -> dict[str, Any]:
    cloud = CloudRuntime(
        CloudSettings(
            mqtt={"host": "127.0.0.1", "port": port},
            ingest={"client_id": "bench-accuracy", "spool_dir": str(workdir / "spool")},
            database_url=f"sqlite+aiosqlite:///{workdir}/cloud.db",
            stores=[{"id": STORE, "nodes": [NODE]}],
        )
    )
    await cloud.start(serve_api=False)
    settings = EdgeSettings(
        store=STORE,
        node=NODE,
        mqtt={"host": "127.0.0.1", "port": port},
        outbox={"path": str(workdir / "outbox.db")},
        health_interval_s=5,
        devices=[
            {
                "id": READER,
                "kind": "rfid_reader",
                "driver": "sim-llrp",
                "options": {
                    "antennas": plan.shelves,
                    "items_per_shelf": plan.items_per_shelf,
                    "products_per_shelf": 4,
                    "read_rate": 0.7,
                    "cross_read_rate": 0.3,
                    "seed": 21,
                },
            }
        ],
    )
    drivers = create_drivers(settings)
    driver = drivers[READER]
    assert isinstance(driver, SimLlrpDriver)
    world = driver.simulator.world
    tracker = _Tracker()
    drain = driver.engine.drain_counts

    def drain_and_note() -> list[CountDelta]:
        counts = drain()
        tracker.decided(counts)
        return counts

    driver.engine.drain_counts = drain_and_note  # type: ignore[method-assign]
    subscription = cloud.bus.subscribe()

    async def watch_bus() -> None:
        while True:
            change = await subscription.get()
            if change.kind == "inventory" and change.store == STORE:
                tracker.seen(change.data["items"])

    watcher = asyncio.create_task(watch_bus())
    edge = EdgeRuntime(settings, drivers, version="bench", handle_signals=False)
    edge_task = asyncio.create_task(edge.run())
    rng = random.Random(7)
    try:
        async with asyncio.timeout(20):
            await driver.connected.wait()
        await asyncio.sleep(plan.warmup_s)
        for _ in range(plan.rounds):
            now = time.time()
            truth = truth_counts(world)
            candidates = [
                epc
                for epc, shelf in sorted(world.truth().items())
                if (shelf, decode_epc(epc).gtin or "") not in tracker.pending
            ]
            for epc in rng.sample(candidates, min(plan.removals, len(candidates))):
                pair = (world.truth()[epc], decode_epc(epc).gtin or "")
                if pair in tracker.pending:
                    continue
                world.remove(epc, now)
                tracker.pending[pair] = _Removal(pair, truth[pair], now)
            busy = set(tracker.pending)
            for _ in range(plan.adds):  # restock a (shelf, product) no removal is timed on
                antenna, product = rng.randint(1, plan.shelves), rng.randrange(4)
                epc = world.add(antenna, now, product)
                if (world.shelf(antenna), decode_epc(epc).gtin) in busy:
                    world.remove(epc, now)  # never mind: keep the timing clean
            for _ in range(plan.moves):
                movable = [
                    e
                    for e, s in sorted(world.truth().items())
                    if (s, decode_epc(e).gtin or "") not in busy
                ]
                epc = rng.choice(movable)
                target = rng.choice(
                    [a for a in range(1, plan.shelves + 1) if a != world.items[epc]]
                )
                if (world.shelf(target), decode_epc(epc).gtin) not in busy:
                    world.move(epc, target, now)
            await asyncio.sleep(plan.round_s)
        await asyncio.sleep(plan.quiet_s)
        truth = truth_counts(world)
        cloud_counts = await _cloud_counts(cloud)
        edge_counts = {(c.shelf, c.gtin): c.count for c in driver.engine.shelf_counts()}
        edge_items = driver.engine.items()
        real = world.truth()
        item_level = (
            sum(1 for epc, shelf in real.items() if edge_items.get(epc) == shelf)
            - len(set(edge_items) - set(real))
        ) / len(real)
        return {
            "cloud": count_accuracy(cloud_counts, truth),
            "edge": count_accuracy(edge_counts, truth),
            "edge_items": item_level,
            "items": sum(truth.values()),
            "removals": tracker.done,
            "missed": len(tracker.pending),
            "reads": driver.simulator.reads_sent,
            "messages": int(driver.metrics()["messages_out"]),
        }
    finally:
        edge.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await edge_task
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        subscription.close()
        await cloud.stop()


def run(quick: bool) -> Result:
    plan = QUICK if quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="bench-accuracy-"))
    broker = Mosquitto(workdir)
    try:
        got = asyncio.run(_measure(plan, workdir, broker.port))
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    removals: list[_Removal] = got["removals"]
    to_cloud = [r.seen_at - r.at for r in removals if r.seen_at is not None]
    after_edge = [
        r.seen_at - r.decided_at
        for r in removals
        if r.seen_at is not None and r.decided_at is not None
    ]
    p95_after_edge = _percentile(after_edge, 0.95)
    rows = [
        Row(
            "cloud inventory accuracy (read rate 0.7, cross-reads)",
            got["cloud"] * 100,
            "%",
            baseline=got["edge"] * 100,
            baseline_name="edge presence engine counts, same moment",
            target=f">= {TARGET_ACCURACY * 100:.1f} %, ratio 1.00",
            passed=got["cloud"] >= TARGET_ACCURACY and abs(got["cloud"] - got["edge"]) < 1e-9,
        ),
        Row("edge item-level accuracy (EPC on the right shelf)", got["edge_items"] * 100, "%"),
        Row(
            "removal -> cloud count change p50",
            statistics.median(to_cloud) if to_cloud else float("nan"),
            "s",
        ),
        Row("removal -> cloud count change p95", _percentile(to_cloud, 0.95), "s"),
        Row(
            "edge decided -> cloud count change p95",
            p95_after_edge,
            "s",
            target=f"<= {TARGET_EDGE_TO_CLOUD_S:.0f} s",
            passed=p95_after_edge <= TARGET_EDGE_TO_CLOUD_S,
        ),
        Row(
            "reduction (raw tag reads / uplink RFID messages)",
            got["reads"] / max(1, got["messages"]),
            "x",
        ),
    ]
    notes = [
        f"{plan.shelves} shelves x {plan.items_per_shelf} items (4 GTINs per shelf), "
        f"{plan.rounds} rounds every {plan.round_s:.0f} s of {plan.removals} removals, "
        f"{plan.adds} restocks, {plan.moves} moves; measured after {plan.quiet_s:.0f} s "
        f"without changes on {got['items']} items",
        f"{len(removals)} removals timed ({got['missed']} not seen by the cloud in time); "
        "the departure rule waits ~10 read cycles (p = 0.7, delta = 1e-3) before an item "
        "counts as gone, which dominates removal -> count",
        f"{got['reads']:,} raw tag reads, {got['messages']:,} RFID messages on the uplink; "
        "edge, Mosquitto and cloud (SQLite) on this machine, real time",
    ]
    return Result(rows, notes)


BENCHMARK = Benchmark(
    name="accuracy", title="RFID shelves end to end: cloud inventory accuracy", run=run
)
