"""Measure load mode: `python -m simulators.scenario.measure --stores 50 --port 1883`.

Starts `storegate cloud` (SQLite in a temp dir, the N stores registered) and
`storegate sim --stores N` as two processes against a running broker, lets them settle,
then samples both for `--window` seconds: the sim's RSS and CPU, the cloud's CPU and RSS,
and how many messages the cloud ingested (its /metrics). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

from simulators.scenario.model import default_scenario


def _cloud_config(work: Path, stores: int, port: int, api_port: int) -> Path:
    template = default_scenario().scaled(stores).stores
    config = {
        "mqtt": {"host": "127.0.0.1", "port": port, "protocol": "5"},
        "ingest": {"client_id": f"measure-{os.getpid()}", "spool_dir": str(work / "spool")},
        "database_url": f"sqlite+aiosqlite:///{work / 'cloud.db'}",
        "api": {"host": "127.0.0.1", "port": api_port},
        "stores": [{"id": s.id, "nodes": [s.node]} for s in template],
    }
    path = work / "cloud.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _ingested(api_port: int) -> float:
    text = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("storegate_messages_ingested_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _family(process: psutil.Process) -> list[psutil.Process]:
    """The process and its children (the sim's worker processes in multi-process mode)."""
    return [process, *process.children(recursive=True)]


def _cpu_s(process: psutil.Process) -> float:
    return sum(float(t.user + t.system) for p in _family(process) for t in [p.cpu_times()])


def _rss(process: psutil.Process) -> int:
    return sum(int(p.memory_info().rss) for p in _family(process))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", type=int, required=True)
    parser.add_argument("--port", type=int, default=1883, help="MQTT 5 broker (Mosquitto)")
    parser.add_argument("--api-port", type=int, default=18_123)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=40.0)
    args = parser.parse_args()
    storegate = [sys.executable, "-m", "storegate"]
    with tempfile.TemporaryDirectory(prefix="storegate-measure-") as tmp:
        work = Path(tmp)
        config = _cloud_config(work, args.stores, args.port, args.api_port)
        quiet = subprocess.DEVNULL
        cloud = subprocess.Popen([*storegate, "cloud", "-c", str(config), "--log-level", "error"])
        sim = subprocess.Popen(
            [
                *(*storegate, "sim", "--stores", str(args.stores), "--port", str(args.port)),
                *("--protocol", "5", "--duration", str(args.settle + args.window + 5)),
            ],
            stdout=quiet,
            stderr=quiet,
        )
        try:
            time.sleep(args.settle)
            cloud_p, sim_p = psutil.Process(cloud.pid), psutil.Process(sim.pid)
            before = (_cpu_s(cloud_p), _cpu_s(sim_p), _ingested(args.api_port))
            time.sleep(args.window)
            after = (_cpu_s(cloud_p), _cpu_s(sim_p), _ingested(args.api_port))
            result = {
                "stores": args.stores,
                "sim_processes": len(_family(sim_p)),
                "sim_rss_mib": round(_rss(sim_p) / 2**20, 1),
                "sim_rss_mib_per_store": round(_rss(sim_p) / 2**20 / args.stores, 2),
                "sim_cpu_percent": round((after[1] - before[1]) / args.window * 100, 1),
                "cloud_cpu_percent": round((after[0] - before[0]) / args.window * 100, 1),
                "cloud_rss_mib": round(cloud_p.memory_info().rss / 2**20, 1),
                "cloud_messages_per_s": round((after[2] - before[2]) / args.window, 1),
            }
        finally:
            sim.wait(timeout=args.settle + args.window + 60)
            cloud.terminate()
            cloud.wait(timeout=30)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
