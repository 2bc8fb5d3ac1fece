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
QUICK_WARMUP_S, QUICK_WINDOW_S = 5.0, 10.0
TARGET_P99_MS = 1000.0


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
                # The generator starts its traffic after its connect allowance; measure
                # over the same window as it does (its start is computed the same way).
                from simulators.loadgen.fleet import CONNECT_MIN_S, CONNECT_S_PER_STORE

                start_at = started + max(CONNECT_MIN_S, stores * CONNECT_S_PER_STORE)
                _wait_until(start_at + warmup_s)
                before = (clouds.cpu_s(), clouds.total("storegate_messages_ingested_total"))
                t0 = time.monotonic()
                _wait_until(start_at + warmup_s + window_s)
                after = (clouds.cpu_s(), clouds.total("storegate_messages_ingested_total"))
                elapsed = time.monotonic() - t0
                rss = clouds.rss()
                load = os.getloadavg()
                runner.join()
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
        cloud_rss_mib=rss / 2**20,
        ingested_per_s=(after[1] - before[1]) / elapsed,
        dead_letters=dead,
        resyncs=resyncs,
        load=load,
    )


def _median(values: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(values), (min(values), max(values))


def rows_for(stores: int, points: list[Point], base_cpu_per_message: float | None) -> list[Row]:
    def row(metric: str, values: list[float], unit: str, **extra: Any) -> Row:
        value, spread = _median(values)
        return Row(metric, value, unit, spread=spread if len(values) > 1 else None, **extra)

    p99 = [p.replay.latency(0.99) for p in points]
    cpu_per_message = [p.cpu_ms_per_message for p in points]
    value = statistics.median(cpu_per_message)
    return [
        row(
            f"publish -> commit p99, {stores} stores",
            p99,
            "ms",
            target=f"<= {TARGET_P99_MS:.0f} ms",
            passed=statistics.median(p99) <= TARGET_P99_MS,
        ),
        row(
            f"publish -> commit p50, {stores} stores", [p.replay.latency(0.5) for p in points], "ms"
        ),
        row(
            f"messages sent, not committed 10 s after the end, {stores} stores",
            [float(p.replay.unconfirmed_measured) for p in points],
            "msgs",
            target="0",
            passed=all(p.replay.unconfirmed_measured == 0 for p in points),
        ),
        row(f"cloud ingest, {stores} stores", [p.ingested_per_s for p in points], "msg/s"),
        row(f"cloud CPU, {stores} stores", [p.cloud_cpu_percent for p in points], "% of a core"),
        row(
            f"cloud CPU per message, {stores} stores",
            cpu_per_message,
            "ms",
            baseline=base_cpu_per_message,
            baseline_name="at the fewest stores",
            target="<= 1.2x (does not grow with stores)" if base_cpu_per_message else None,
            passed=(value <= base_cpu_per_message * 1.2) if base_cpu_per_message else None,
        ),
        row(f"cloud RSS, {stores} stores", [p.cloud_rss_mib for p in points], "MiB"),
        row(
            f"dead letters + resyncs, {stores} stores",
            [p.dead_letters + p.resyncs for p in points],
            "",
            target="0",
            passed=all(p.dead_letters + p.resyncs == 0 for p in points),
        ),
    ]


def run(quick: bool, replicas: int = 1, plan: tuple[tuple[int, int], ...] | None = None) -> Result:
    plan = plan or (QUICK if quick else FULL)
    warmup, window = (QUICK_WARMUP_S, QUICK_WINDOW_S) if quick else (WARMUP_S, WINDOW_S)
    rows: list[Row] = []
    notes: list[str] = []
    base: float | None = None
    loads: list[float] = []
    recording = load_recording(RECORDING)
    for stores, runs in plan:
        points = [
            measure(stores, replicas=replicas, warmup_s=warmup, window_s=window)
            for _ in range(runs)
        ]
        loads += [p.load[0] for p in points]
        rows += rows_for(stores, points, base)
        if base is None:
            base = statistics.median(p.cpu_ms_per_message for p in points)
        last = points[-1].replay
        notes.append(
            f"{stores} stores: {runs} run(s); last run: {last.published} messages sent"
            f" ({last.events} events, {last.bytes / max(1, last.published):.0f} bytes each),"
            f" {last.births} births, {last.connects} connects, {last.lost} connections lost,"
            f" generator behind its schedule by {max(last.send_lag_ms, default=0.0):.0f} ms"
            " at worst,"
            f" generator CPU {last.generator_cpu_s / (warmup + window) * 100:.0f} % of a core"
            f" over its 4 processes"
        )
    notes += [
        f"recording: {RECORDING.name}, one store of {recording.about.get('items_in_birth')} items"
        f" on 20 shelves (default scenario's people, lockers, beacons; real edge daemon):"
        f" {len(recording.messages)} messages in {recording.duration_s:.0f} s"
        f" ({recording.rate:.2f} msg/s per store), played at 1x, looped, each store from its"
        " own phase",
        f"{replicas} `storegate cloud` process(es), default configuration, PostgreSQL"
        " (default configuration, fsync on), Mosquitto, generator (4 processes), all on this"
        f" machine; medians of the runs, min to max in brackets; window {window:.0f} s after"
        f" {warmup:.0f} s of warm-up following connects and births",
        "publish -> commit: generator's publish to the commit mark covering the message"
        " coming back (marks every 200 ms, which is part of the figure)",
        f"a 2-core machine shared with other agents' jobs: load average 1 min during the"
        f" runs {min(loads):.1f} to {max(loads):.1f}; absolute figures are pessimistic",
    ]
    return Result(rows, notes)


BENCHMARK = Benchmark(name="scale", title="One cloud process, up to 1,000 stores", run=run)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stores", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    plan = tuple((n, args.runs) for n in args.stores)
    result = run(False, args.replicas, plan)
    for row in result.rows:
        print(json.dumps({"metric": row.metric, "value": row.value, "spread": row.spread}))
    for note in result.notes:
        print(note)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
