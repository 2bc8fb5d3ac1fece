"""Load mode across processes: `storegate sim --stores 200` runs 25 stores per child process.

Why not all in one: one asyncio loop saturates one core, and each store holds ~20 file
descriptors (outbox, sockets, locker ptys); pyserial's `select()` cannot watch a descriptor
numbered 1024 or more, so a process must stay well below that. Each child is a plain
`storegate sim` on its slice of the scenario; it writes its final stats (JSON) and its part
of the ground truth, which the parent adds up and concatenates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psutil
import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.scenario.model import Scenario

STOP_GRACE_S = 60.0  # a child that has not stopped this long after SIGTERM is killed


@dataclass
class Worker:
    index: int
    stores: int
    process: subprocess.Popen[bytes]
    stats_file: Path
    truth_file: Path | None
    log: IO[bytes]
    _ps: psutil.Process | None = None

    def usage(self) -> tuple[float, float]:
        """RSS (MiB) and CPU % since the last call; zeros once it has exited."""
        if self.process.poll() is not None:
            return 0.0, 0.0
        try:
            if self._ps is None:
                self._ps = psutil.Process(self.process.pid)
            return self._ps.memory_info().rss / 2**20, self._ps.cpu_percent(interval=None)
        except psutil.Error:
            return 0.0, 0.0

    def stats(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            return {}
        return data


def worker_config(scenario: Scenario, index: int, truth: Path | None) -> dict[str, Any]:
    """The child's scenario as plain YAML data (the broker password kept in clear: the file
    lives in a private temp dir and is deleted at the end)."""
    data = scenario.model_dump(mode="json")
    if scenario.broker.password is not None:
        data["broker"]["password"] = scenario.broker.password.get_secret_value()
    data["seed"] = scenario.seed + 7919 * index  # no two slices draw the same people
    data["truth"] = str(truth) if truth is not None else None
    return data


def run_workers(scenario: Scenario, console: Console, per_process: int) -> int:
    stop_requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tmp = Path(tempfile.mkdtemp(prefix="storegate-sim-workers-"))
    os.chmod(tmp, 0o700)
    workers: list[Worker] = []
    started = time.monotonic()
    try:
        for index, first in enumerate(range(0, len(scenario.stores), per_process)):
            part = scenario.model_copy(
                update={"stores": scenario.stores[first : first + per_process]}
            )
            truth = tmp / f"truth-{index}.jsonl" if scenario.truth is not None else None
            config = tmp / f"worker-{index}.yaml"
            config.write_text(yaml.safe_dump(worker_config(part, index, truth)))
            stats_file = tmp / f"stats-{index}.json"
            log = (tmp / f"worker-{index}.log").open("wb")
            command = [sys.executable, "-m", "storegate", "sim", str(config)]
            command += ["--stats-file", str(stats_file)]
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            workers.append(Worker(index, len(part.stores), process, stats_file, truth, log))
        console.print(
            f"simulating {len(scenario.stores)} stores in {len(workers)} processes"
            f" ({per_process} per process); Ctrl-C stops"
        )
        _watch(workers, console, stop_requested, started)
        failed = [w for w in workers if w.process.returncode != 0]
        for worker in failed:
            worker.log.flush()
            tail = (tmp / f"worker-{worker.index}.log").read_text(errors="replace")[-2000:]
            console.print(f"[red]worker {worker.index} exited {worker.process.returncode}[/]")
            console.print(tail)
        _merge_truth(workers, scenario.truth)
        _summary(workers, console, time.monotonic() - started, scenario)
        return 1 if failed else 0
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.wait()
            worker.log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _watch(
    workers: list[Worker], console: Console, stop_requested: list[int], started: float
) -> None:
    signalled_at: float | None = None
    with Live(_table(workers, 0.0), console=console, refresh_per_second=1) as live:
        while any(w.process.poll() is None for w in workers):
            if stop_requested and signalled_at is None:
                signalled_at = time.monotonic()
                for worker in workers:
                    if worker.process.poll() is None:
                        worker.process.send_signal(signal.SIGTERM)
            if signalled_at is not None and time.monotonic() - signalled_at > STOP_GRACE_S:
                for worker in workers:
                    if worker.process.poll() is None:
                        console.print(f"[red]worker {worker.index} did not stop: killed[/]")
                        worker.process.kill()
            time.sleep(1.0)
            live.update(_table(workers, time.monotonic() - started))
    console.line()


def _table(workers: list[Worker], elapsed: float) -> Table:
    table = Table(title=f"storegate sim: {elapsed:5.0f} s", title_justify="left")
    for column in ("process", "stores", "state", "RSS MiB", "CPU %"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for worker in workers:
        alive = worker.process.poll() is None
        rss, cpu = worker.usage()
        state = "running" if alive else f"exited {worker.process.returncode}"
        table.add_row(
            f"#{worker.index} pid {worker.process.pid}",
            str(worker.stores),
            state,
            f"{rss:.0f}",
            f"{cpu:.0f}",
        )
    return table


def _merge_truth(workers: list[Worker], truth: Path | None) -> None:
    if truth is None:
        return
    truth.parent.mkdir(parents=True, exist_ok=True)
    with truth.open("wb") as out:
        for worker in workers:  # a store lives in one worker: per-store order is kept
            if worker.truth_file is not None and worker.truth_file.exists():
                with worker.truth_file.open("rb") as part:
                    shutil.copyfileobj(part, out)


def _summary(workers: list[Worker], console: Console, elapsed: float, scenario: Scenario) -> None:
    stats = [w.stats() for w in workers]
    stores = len(scenario.stores)
    connected = sum(int(s.get("connected", 0)) for s in stats)
    messages = sum(int(s.get("messages_sent", 0)) for s in stats)
    rss = sum(float(s.get("rss_bytes", 0)) for s in stats) / 2**20
    console.print(
        f"sim stopped after {elapsed:.0f} s: {stores} store(s), {connected} connected,"
        f" {messages} messages acked by the broker, RSS {rss:.0f} MiB in {len(workers)}"
        f" processes ({rss / stores:.1f} MiB per store)"
    )
    if scenario.truth is not None:
        console.print(f"ground truth: {scenario.truth}")
