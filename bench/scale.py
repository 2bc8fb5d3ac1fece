"""One cloud process and 1,000 stores: `storegate bench --only scale`.

Measured, not extrapolated. The stores are one real store's traffic (the default scenario's
people on 20 shelves of 150 items, lockers and beacons, through the real edge daemon),
recorded once in `bench/recordings/default-store.jsonl` (`storegate loadgen record`) and
replayed by `simulators.loadgen` as N stores from 4 processes, one MQTT connection per
store, each with its own id, births on connect and gap-free sequences. The cloud is
`storegate cloud` in its default configuration on PostgreSQL (default configuration too,
fsync on), Mosquitto in front as `deploy/mosquitto/mosquitto.conf` sets it up
(`max_inflight_messages 0`).

Per store count and run: the cloud's CPU and RSS over the measured window, messages it
ingested, and publish -> commit latency of every data message sent in the window: from the
generator's publish to the commit mark that covers it arriving back (`committed`, published
every `ingest.commit_interval_ms`, 200 ms: up to 200 ms of the figure is that interval).
Dead letters and resyncs are counted: a generator bug if not 0.

`python -m bench.scale --stores 1000 --replicas 2` runs N cloud processes on the same load
on PostgreSQL-leased shards (`ingest.shards` = 4 per replica, docs/scale-out.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from bench._support import Mosquitto, Postgres, free_port
from bench.runner import Benchmark, Result, Row
from protocols.mqtt import MqttSettings
from simulators.loadgen.fleet import ReplayPlan, ReplayResult, replay
from simulators.loadgen.recording import load_recording
from simulators.loadgen.replay import store_id

RECORDING = Path(__file__).parent / "recordings" / "default-store.jsonl"
PREFIX = "bench"
FULL = ((100, 5), (300, 5), (1000, 5))  # stores, runs
QUICK = ((20, 1), (50, 1))
WARMUP_S, WINDOW_S = 10.0, 20.0
WARMUP_S_PER_STORE = 0.03  # 30 s at 1,000 stores: the birth storm's catch-up
REPLICAS_FULL = (1000, 5, 2)  # stores, runs, replicas: compared with 1 replica
QUICK_WARMUP_S, QUICK_WINDOW_S = 5.0, 10.0
TARGET_P99_MS = 1000.0
BIRTH_POLL_S = 0.25


@dataclass
class Point:
    stores: int
    replay: ReplayResult
    cloud_cpu_percent: float
    cloud_rss_mib: float
    ingested_per_s: float
    dead_letters: float
    resyncs: float
    load: tuple[float, float, float]
    # seconds from the generator's start (every store connecting and sending its birth at
    # once, as after a broker restart) until the cloud had applied every birth, and until
    # it had caught up (lag 0); None: not within the run
    postgres_cpu_percent: float = 0.0  # the database server, all its processes
    broker_cpu_percent: float = 0.0
    births_s: float | None = None
    catch_up_s: float | None = None
    window_from_s: float = 0.0  # when the measured window began, on the same clock

    @property
    def cpu_ms_per_message(self) -> float:
        if self.ingested_per_s <= 0:
            return float("nan")
        return self.cloud_cpu_percent * 10 / self.ingested_per_s


def _metric_sum(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


class _BirthWatch:
    """Polls the clouds while every store connects and sends its birth at once (as after a
    broker restart): when all births are applied, and when the cloud has caught up, lag 0:
    births applied and nothing waiting in its queue on two polls in a row (at its bound the
    ingestor stops reading, so a backlog in the broker shows as a full queue here)."""

    def __init__(self, clouds: _Clouds, expected: int, since: float) -> None:
        self.clouds, self.expected, self.since = clouds, expected, since
        self.births_s: float | None = None
        self.caught_up_s: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        empty = 0
        while not self._stop.wait(BIRTH_POLL_S):
            try:
                applied = self.clouds.total('storegate_messages_ingested_total{type="birth"}')
                queued = self.clouds.total("storegate_ingest_queue_depth")
            except httpx.HTTPError:
                continue  # a busy cloud answers late; the next poll asks again
            now = time.time() - self.since
            if applied < self.expected:
                continue
            if self.births_s is None:
                self.births_s = now
            empty = empty + 1 if queued == 0 else 0
            if empty >= 2:
                self.caught_up_s = now
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class _Clouds:
    """`storegate cloud` processes on one database, with their API ports."""

    def __init__(self, work: Path, broker: int, database_url: str, stores: int, replicas: int):
        node = load_recording(RECORDING).node
        self.urls: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        for index in range(replicas):
            port = free_port()
            config: dict[str, Any] = {
                "mqtt": {"host": "127.0.0.1", "port": broker},
                "ingest": {
                    # replicas share the shard sessions' prefix; each has its own mqtt id
                    "client_id": "bench-cloud" if replicas > 1 else f"bench-cloud-{index}",
                    "spool_dir": str(work / f"spool-{index}"),
                },
                "database_url": database_url,
                "data_dir": str(work / f"data-{index}"),
                "api": {"host": "127.0.0.1", "port": port},
                "stores": [
                    {"id": store_id(PREFIX, n), "nodes": [node]} for n in range(1, stores + 1)
                ],
            }
            if replicas > 1:
                # leased shards (docs/scale-out.md): each store's streams on one replica
                config["ingest"].update(shards=4 * replicas, replica_id=f"replica-{index}")
                config["mqtt"]["client_id"] = f"bench-replica-{index}"
            path = work / f"cloud-{index}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = (work / f"cloud-{index}.log").open("ab")
            command = [sys.executable, "-m", "storegate", "cloud", "-c", str(path)]
            self.processes.append(
                subprocess.Popen([*command, "--log-level", "warning"], stdout=log, stderr=log)
            )
            self.urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        for url in self.urls:
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"cloud not ready; see {work}/cloud-*.log")
                time.sleep(0.5)
        self.ps = [psutil.Process(p.pid) for p in self.processes]

    def cpu_s(self) -> float:
        return sum(float(t.user + t.system) for p in self.ps for t in [p.cpu_times()])

    def rss(self) -> int:
        return sum(int(p.memory_info().rss) for p in self.ps)

    def total(self, name: str) -> float:
        return sum(_metric_sum(url, name) for url in self.urls)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(60)


def _wait_until(instant: float) -> None:
    time.sleep(max(0.0, instant - time.time()))


def measure(
    stores: int, *, replicas: int = 1, warmup_s: float = WARMUP_S, window_s: float = WINDOW_S
) -> Point:
    with tempfile.TemporaryDirectory(prefix="storegate-bench-scale-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(
            work,
            extra=["max_inflight_messages 0", "max_queued_messages 100000", "persistence false"],
        )
        try:
            postgres = Postgres()
        except BaseException:
            broker.stop()
            raise
        try:
            url = postgres.create_database("storegate")
            clouds = _Clouds(work, broker.port, url, stores, replicas)
            try:
                plan = ReplayPlan(
                    RECORDING,
                    stores,
                    processes=4,
                    prefix=PREFIX,
                    duration_s=warmup_s + window_s,
                    warmup_s=warmup_s,
                    drain_s=10.0,
                )
                outcome: dict[str, ReplayResult] = {}
                runner = threading.Thread(
                    target=lambda: outcome.update(r=replay(plan, MqttSettings(port=broker.port)))
                )
                started = time.time()
                runner.start()
                births = _BirthWatch(
                    clouds, stores * len(load_recording(RECORDING).births), started
                )
                # The generator starts its traffic after its connect allowance; measure
                # over the same window as it does (its start is computed the same way).
                from simulators.loadgen.fleet import CONNECT_MIN_S, CONNECT_S_PER_STORE

                start_at = started + max(CONNECT_MIN_S, stores * CONNECT_S_PER_STORE)
                _wait_until(start_at + warmup_s)
                before = (clouds.cpu_s(), clouds.total("storegate_messages_ingested_total"))
                servers_before = (postgres.cpu_s(), broker.cpu_s())
                t0 = time.monotonic()
                _wait_until(start_at + warmup_s + window_s)
                after = (clouds.cpu_s(), clouds.total("storegate_messages_ingested_total"))
                servers_after = (postgres.cpu_s(), broker.cpu_s())
                elapsed = time.monotonic() - t0
                rss = clouds.rss()
                load = os.getloadavg()
                runner.join()
                births.stop()
                result = outcome["r"]
                dead = clouds.total("storegate_messages_dead_lettered_total")
                resyncs = clouds.total("storegate_resync_commands_total")
            finally:
                clouds.stop()
        finally:
            postgres.stop()
            broker.stop()
    return Point(
        stores=stores,
        replay=result,
        cloud_cpu_percent=(after[0] - before[0]) / elapsed * 100,
        postgres_cpu_percent=(servers_after[0] - servers_before[0]) / elapsed * 100,
        broker_cpu_percent=(servers_after[1] - servers_before[1]) / elapsed * 100,
        cloud_rss_mib=rss / 2**20,
        ingested_per_s=(after[1] - before[1]) / elapsed,
        dead_letters=dead,
        resyncs=resyncs,
        load=load,
        births_s=births.births_s,
        catch_up_s=births.caught_up_s,
        window_from_s=start_at + warmup_s - started,
    )


def _median(values: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(values), (min(values), max(values))


def _steady(point: Point) -> bool:
    """The measured window began after the birth storm was caught up: steady state."""
    return point.catch_up_s is not None and point.catch_up_s <= point.window_from_s


def rows_for(
    label: str,
    points: list[Point],
    base_cpu_per_message: float | None,
    *,
    baseline: dict[str, float] | None = None,
) -> list[Row]:
    """Rows of one load (`label`: "1000 stores", "1000 stores, 2 replicas"); `baseline`:
    the same load's single-replica p99 and CPU per message, to compare replicas with."""

    def row(metric: str, values: list[float], unit: str, **extra: Any) -> Row:
        value, spread = _median(values)
        return Row(metric, value, unit, spread=spread if len(values) > 1 else None, **extra)

    p99 = [p.replay.latency(0.99) for p in points]
    cpu_per_message = [p.cpu_ms_per_message for p in points]
    value = statistics.median(cpu_per_message)
    # A run whose cloud never caught up counts as the whole run (it did not within it).
    catch_up = [p.catch_up_s if p.catch_up_s is not None else p.window_from_s * 2 for p in points]
    steady = sum(_steady(p) for p in points)
    extra_p99: dict[str, Any] = {}
    extra_cpu: dict[str, Any] = {}
    if baseline is not None:
        extra_p99 = {"baseline": baseline["p99"], "baseline_name": "1 replica, median"}
        extra_cpu = {"baseline": baseline["cpu"], "baseline_name": "1 replica, median"}
    elif base_cpu_per_message:
        extra_cpu = {
            "baseline": base_cpu_per_message,
            "baseline_name": "at the fewest stores",
            "target": "<= 1.2x (does not grow with stores)",
            "passed": value <= base_cpu_per_message * 1.2,
        }
    return [
        row(
            f"publish -> commit p99, {label}, steady state",
            p99,
            "ms",
            target=f"<= {TARGET_P99_MS:.0f} ms",
            passed=statistics.median(p99) <= TARGET_P99_MS and steady == len(points),
            **extra_p99,
        ),
        row(f"publish -> commit p50, {label}", [p.replay.latency(0.5) for p in points], "ms"),
        row(
            f"catch-up after {points[0].stores:,} births at once: time to lag 0, {label}",
            catch_up,
            "s",
        ),
        row(
            f"runs whose window began after the catch-up, {label}",
            [float(steady)],
            f"of {len(points)}",
            target=f"{len(points)}",
            passed=steady == len(points),
        ),
        row(
            f"messages sent, not committed 10 s after the end, {label}",
            [float(p.replay.unconfirmed_measured) for p in points],
            "msgs",
            target="0",
            passed=all(p.replay.unconfirmed_measured == 0 for p in points),
        ),
        row(f"cloud ingest, {label}", [p.ingested_per_s for p in points], "msg/s"),
        row(f"cloud CPU, {label}", [p.cloud_cpu_percent for p in points], "% of a core"),
        row(f"cloud CPU per message, {label}", cpu_per_message, "ms", **extra_cpu),
        row(f"cloud RSS, {label}", [p.cloud_rss_mib for p in points], "MiB"),
        row(
            f"PostgreSQL CPU (server, all processes), {label}",
            [p.postgres_cpu_percent for p in points],
            "% of a core",
        ),
        row(
            f"PostgreSQL CPU per message, {label}",
            [p.postgres_cpu_percent * 10 / p.ingested_per_s for p in points if p.ingested_per_s],
            "ms",
        ),
        row(f"Mosquitto CPU, {label}", [p.broker_cpu_percent for p in points], "% of a core"),
        row(
            f"dead letters + resyncs, {label}",
            [p.dead_letters + p.resyncs for p in points],
            "",
            target="0",
            passed=all(p.dead_letters + p.resyncs == 0 for p in points),
        ),
    ]


def warmup_for(stores: int, quick: bool) -> float:
    """Warm-up after the connects: long enough for the cloud to catch up with every
    store's birth at once, so the window measures steady state (the catch-up has its own
    row; a run where it took longer says so)."""
    if quick:
        return QUICK_WARMUP_S
    return max(WARMUP_S, stores * WARMUP_S_PER_STORE)


def run(
    quick: bool,
    replicas: int = 1,
    plan: tuple[tuple[int, int], ...] | None = None,
    compare_replicas: tuple[int, int, int] | None = None,
) -> Result:
    """`compare_replicas`: (stores, runs, replicas) measured after the plan, compared with
    the plan's single-replica point at that many stores (the full run: 1,000 x 5 x 2)."""
    plan = plan or (QUICK if quick else FULL)
    if compare_replicas is None and not quick and replicas == 1 and plan is FULL:
        compare_replicas = REPLICAS_FULL
    window = QUICK_WINDOW_S if quick else WINDOW_S
    rows: list[Row] = []
    notes: list[str] = []
    base: float | None = None
    loads: list[float] = []
    measured: dict[int, list[Point]] = {}
    recording = load_recording(RECORDING)

    def note(label: str, points: list[Point], warmup: float) -> None:
        last = points[-1].replay
        notes.append(
            f"{label}: {len(points)} run(s), warm-up {warmup:.0f} s; catch-up (all births"
            f" applied, then the queue empty on 2 polls) per run:"
            f" {', '.join(_seconds(p.catch_up_s) for p in points)} after the generator's"
            f" start, window from {points[-1].window_from_s:.0f} s; last run:"
            f" {last.published} messages sent"
            f" ({last.events} events, {last.bytes / max(1, last.published):.0f} bytes each),"
            f" {last.births} births, {last.connects} connects, {last.lost} connections lost,"
            f" generator behind its schedule by {max(last.send_lag_ms, default=0.0):.0f} ms"
            " at worst,"
            f" generator CPU {last.generator_cpu_s / (warmup + window) * 100:.0f} % of a core"
            f" over its 4 processes"
        )

    for stores, runs in plan:
        warmup = warmup_for(stores, quick)
        points = [
            measure(stores, replicas=replicas, warmup_s=warmup, window_s=window)
            for _ in range(runs)
        ]
        measured[stores] = points
        loads += [p.load[0] for p in points]
        label = f"{stores} stores" if replicas == 1 else f"{stores} stores, {replicas} replicas"
        rows += rows_for(label, points, base)
        if base is None:
            base = statistics.median(p.cpu_ms_per_message for p in points)
        note(label, points, warmup)
    if compare_replicas is not None:
        stores, runs, count = compare_replicas
        warmup = warmup_for(stores, quick)
        single = measured.get(stores) or [
            measure(stores, warmup_s=warmup, window_s=window) for _ in range(runs)
        ]
        points = [
            measure(stores, replicas=count, warmup_s=warmup, window_s=window) for _ in range(runs)
        ]
        loads += [p.load[0] for p in points]
        baseline = {
            "p99": statistics.median(p.replay.latency(0.99) for p in single),
            "cpu": statistics.median(p.cpu_ms_per_message for p in single),
        }
        label = f"{stores} stores, {count} replicas"
        rows += rows_for(label, points, None, baseline=baseline)
        note(label, points, warmup)
        notes.append(
            f"{count} replicas: `storegate cloud` x {count} on the same load and database,"
            f" leased shards (`ingest.shards` = {4 * count}, docs/scale-out.md); CPU and RSS"
            " are the sum over the replicas"
        )
    notes += [
        f"recording: {RECORDING.name}, one store of {recording.about.get('items_in_birth')} items"
        f" on 20 shelves (default scenario's people, lockers, beacons; real edge daemon):"
        f" {len(recording.messages)} messages in {recording.duration_s:.0f} s"
        f" ({recording.rate:.2f} msg/s per store), played at 1x, looped, each store from its"
        " own phase",
        f"{replicas} `storegate cloud` process(es) unless the row says replicas, default"
        " configuration, PostgreSQL (default configuration, fsync on), Mosquitto, generator"
        " (4 processes), all on this machine; medians of the runs, min to max in brackets;"
        f" window {window:.0f} s after the warm-up that follows connects and births"
        f" (max({WARMUP_S:.0f} s, {WARMUP_S_PER_STORE * 1000:.0f} ms per store))",
        "every store connects and sends its birth at once at the start (what a broker restart"
        " does): the catch-up row is that storm, from the generator's start until the cloud"
        " applied every birth and its queue stayed empty; the p99 and p50 rows are the"
        " window after it (steady state) when every run's window began after its catch-up",
        "publish -> commit: generator's publish to the commit mark covering the message"
        " coming back (marks every 200 ms, which is part of the figure)",
        f"a 2-core machine shared with other agents' jobs: load average 1 min during the"
        f" runs {min(loads):.1f} to {max(loads):.1f}; absolute figures are pessimistic",
    ]
    return Result(rows, notes)


def _seconds(value: float | None) -> str:
    return "not caught up" if value is None else f"{value:.1f} s"


BENCHMARK = Benchmark(name="scale", title="One cloud process, up to 1,000 stores", run=run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--compare-replicas",
        type=int,
        default=0,
        help="also run the largest store count on this many replicas, compared with 1",
    )
    args = parser.parse_args()
    plan = tuple((n, args.runs) for n in args.stores)
    compare = (
        (max(args.stores), args.runs, args.compare_replicas) if args.compare_replicas else None
    )
    result = run(False, args.replicas, plan, compare)
    for row in result.rows:
        print(json.dumps({"metric": row.metric, "value": row.value, "spread": row.spread}))
    for note in result.notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
