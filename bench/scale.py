"""How the cloud grows with stores: `storegate bench --only scale`.

For each store count, `simulators.scenario.measure` runs `storegate cloud` and
`storegate sim --stores N` (the real edge daemon per store with simulated devices, normal
shopper/staff traffic) as processes against a real Mosquitto, lets them settle, then samples
the cloud's CPU, RSS and ingest rate. The baseline is the smallest store count: the ratio of
cloud CPU per store shows whether cost grows linearly (1.0x) or worse. The stores one cloud
process sustains is extrapolated from CPU per store at the largest count, and labelled so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._support import Mosquitto, free_port
from bench.runner import Benchmark, Result, Row

FULL = ((10, 20.0, 30.0), (25, 20.0, 30.0), (50, 25.0, 30.0))  # stores, settle s, window s
QUICK = ((5, 10.0, 10.0), (15, 12.0, 10.0))


def _measure(port: int, stores: int, settle: float, window: float) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "simulators.scenario.measure",
        *("--stores", str(stores), "--port", str(port), "--api-port", str(free_port())),
        *("--settle", str(settle), "--window", str(window)),
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=settle + window + 180
    ).stdout
    result: dict[str, float] = json.loads(output.strip().splitlines()[-1])
    return result


def run(quick: bool) -> Result:
    with tempfile.TemporaryDirectory(prefix="storegate-bench-scale-") as tmp:
        broker = Mosquitto(Path(tmp), extra=["max_queued_messages 10000"])
        try:
            points = [_measure(broker.port, *plan) for plan in (QUICK if quick else FULL)]
        finally:
            broker.stop()
    first = points[0]
    base_per_store = first["cloud_cpu_percent"] / first["stores"]
    rows = []
    for point in points:
        stores = int(point["stores"])
        per_store = point["cloud_cpu_percent"] / stores
        rows += [
            Row(
                f"cloud CPU per store at {stores} stores",
                per_store,
                "% of a core",
                baseline=base_per_store,
                baseline_name=f"at {int(first['stores'])} stores",
                target="<= 1.0x (no worse than linear)",
                passed=per_store <= base_per_store * 1.2,
            ),
            Row(f"cloud RSS at {stores} stores", point["cloud_rss_mib"], "MiB"),
            Row(
                f"cloud messages ingested at {stores} stores",
                point["cloud_messages_per_s"],
                "msg/s",
            ),
            Row(
                f"simulator RSS per store at {stores} stores", point["sim_rss_mib_per_store"], "MiB"
            ),
        ]
    last = points[-1]
    per_store_last = last["cloud_cpu_percent"] / last["stores"]
    sustained = 100.0 / per_store_last if per_store_last > 0 else float("inf")
    rows.append(
        Row(
            "stores one cloud process sustains (extrapolated to 100% of a core)",
            sustained,
            "stores",
        )
    )
    notes = [
        "Normal traffic per store: the default scenario (shoppers, staff restocking, online"
        " orders, app shoppers), one edge node with sim-llrp, sim-cu16 and sim-ble.",
        "The simulator runs on the same 2-core machine as the cloud, so at high store counts the"
        " two compete for CPU; the extrapolation assumes the cloud gets a core of its own.",
    ]
    return Result(rows, notes)


BENCHMARK = Benchmark(name="scale", title="Cloud scale with simulated stores", run=run)
