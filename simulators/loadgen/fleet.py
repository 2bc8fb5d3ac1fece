"""N stores from a few processes: `storegate loadgen replay store.jsonl --stores 1000`.

Stores are split evenly over `processes` replay processes (`simulators.loadgen.replay`),
which all start their traffic at the same instant (after every store connected and sent its
birth), so a caller can measure the cloud over a window it knows. Their results are added
up: messages, commit latencies (publish -> commit mark received), how late the generator
sent against its schedule, resyncs it was asked for, what was still unconfirmed at the end.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from protocols.mqtt import MqttSettings

CONNECT_S_PER_STORE = 0.01  # time allowed to connect and send births, before the traffic
CONNECT_MIN_S = 3.0


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    recording: Path
    stores: int
    processes: int = 4
    prefix: str = "loadgen"
    speed: float = 1.0
    duration_s: float = 60.0
    warmup_s: float = 0.0
    drain_s: float = 10.0
    seed: int = 1


@dataclass(frozen=True, slots=True)
class ReplayResult:
    stores: int
    processes: int
    connected_at_start: int
    start_at: float
    measure_from: float
    end_at: float
    published: int
    published_measured: int
    bytes: int
    events: int
    by_type: dict[str, int]
    births: int
    connects: int
    lost: int
    skipped_offline: int
    resyncs: int
    other_commands: int
    confirmed: int
    unconfirmed: int
    unconfirmed_measured: int
    latencies_ms: list[float]
    send_lag_ms: list[float]
    generator_cpu_s: float
    generator_rss_bytes: int

    @property
    def measured_s(self) -> float:
        return self.end_at - self.measure_from

    def latency(self, q: float) -> float:
        return percentile(self.latencies_ms, q)

    def summary(self) -> dict[str, Any]:
        """Everything but the samples, with their percentiles."""
        kept = ("latencies_ms", "send_lag_ms")
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in kept}
        for name in ("latencies_ms", "send_lag_ms"):
            samples: list[float] = getattr(self, name)
            out[name] = {
                "n": len(samples),
                "p50": percentile(samples, 0.5),
                "p99": percentile(samples, 0.99),
                "max": max(samples, default=0.0),
            }
        return out


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def replay(plan: ReplayPlan, mqtt: MqttSettings) -> ReplayResult:
    """Run the plan's processes to the end and add their results up."""
    if plan.stores < 1 or plan.processes < 1:
        raise ValueError("at least one store and one process")
    processes = min(plan.processes, plan.stores)
    share, extra = divmod(plan.stores, processes)
    connect_s = max(CONNECT_MIN_S, plan.stores * CONNECT_S_PER_STORE)
    start_at = time.time() + connect_s
    children = []
    first = 1
    for index in range(processes):
        count = share + (1 if index < extra else 0)
        command = [
            *(sys.executable, "-m", "simulators.loadgen.replay"),
            *("--recording", str(plan.recording), "--first", str(first), "--count", str(count)),
            *("--prefix", plan.prefix, "--host", mqtt.host, "--port", str(mqtt.port)),
            *("--protocol", mqtt.protocol, "--speed", str(plan.speed)),
            *("--start-at", str(start_at), "--warmup", str(plan.warmup_s)),
            *("--duration", str(plan.duration_s), "--drain", str(plan.drain_s)),
            *("--seed", str(plan.seed)),
        ]
        children.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        first += count
    timeout = connect_s + plan.duration_s + plan.drain_s + 60
    results = []
    for child in children:
        out, _ = child.communicate(timeout=timeout)
        if child.returncode != 0:
            raise RuntimeError(f"replay process exited with {child.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return _added(results, processes)


def _added(results: list[dict[str, Any]], processes: int) -> ReplayResult:
    def total(key: str) -> int:
        return sum(int(r[key]) for r in results)

    by_type: dict[str, int] = {}
    for r in results:
        for kind, n in r["by_type"].items():
            by_type[kind] = by_type.get(kind, 0) + n
    return ReplayResult(
        stores=total("stores"),
        processes=processes,
        connected_at_start=total("connected_at_start"),
        start_at=min(r["start_at"] for r in results),
        measure_from=min(r["measure_from"] for r in results),
        end_at=max(r["end_at"] for r in results),
        published=total("published"),
        published_measured=total("published_measured"),
        bytes=total("bytes"),
        events=total("events"),
        by_type=by_type,
        births=total("births"),
        connects=total("connects"),
        lost=total("lost"),
        skipped_offline=total("skipped_offline"),
        resyncs=total("resyncs"),
        other_commands=total("other_commands"),
        confirmed=total("confirmed"),
        unconfirmed=total("unconfirmed"),
        unconfirmed_measured=total("unconfirmed_measured"),
        latencies_ms=[x for r in results for x in r["latencies_ms"]],
        send_lag_ms=[x for r in results for x in r["send_lag_ms"]],
        generator_cpu_s=sum(float(r["cpu_s"]) for r in results),
        generator_rss_bytes=total("rss_bytes"),
    )


def median_and_spread(values: list[float]) -> tuple[float, tuple[float, float]]:
    return statistics.median(values), (min(values), max(values))
