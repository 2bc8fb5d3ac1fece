"""`storegate sim`: whole simulated stores from a scenario file (see docs/demo.md).

Each store runs the real edge daemon with simulated drivers; shoppers, staff and online
orders act on the simulated devices. `--stores N` is the load mode: N copies of the
scenario's first store, up to `--per-process` of them per process (see `workers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from simulators.preflight import describe_conflict, nodes_in_use
from simulators.scenario.fleet import Fleet, FleetStats
from simulators.scenario.model import (
    BrokerSection,
    Scenario,
    ScenarioError,
    default_scenario,
    load_scenario,
)
from simulators.scenario.workers import run_workers

DETAILED_ROWS = 12  # above this many stores the table shows totals only


@dataclass(frozen=True, slots=True)
class SimOptions:
    stores: int | None = None
    duration: float | None = None
    host: str | None = None
    port: int | None = None
    protocol: str | None = None
    truth: Path | None = None
    per_process: int = 25  # above this many stores, child processes share the load
    stats_file: Path | None = None  # final stats as JSON (for a parent `storegate sim`)


def run_sim(scenario: Path | None, *, console: Console, options: SimOptions | None = None) -> int:
    options = options or SimOptions()
    try:
        loaded = load_scenario(scenario) if scenario is not None else default_scenario()
        loaded = _apply(loaded, options)
    except ScenarioError as exc:
        console.print(f"[red]bad scenario[/]: {exc}")
        return 2
    if options.per_process < 1:
        console.print("[red]--per-process must be at least 1[/]")
        return 2
    if len(loaded.stores) > options.per_process:
        return run_workers(loaded, console, options.per_process)
    code, last = asyncio.run(_simulate(loaded, console))
    if options.stats_file is not None:
        _write_stats(options.stats_file, last)
    return code


def _write_stats(path: Path, last: FleetStats) -> None:
    path.write_text(
        json.dumps(
            {
                "stores": len(last.stores),
                "connected": last.connected,
                "messages_sent": last.messages_sent,
                "rss_bytes": last.rss_bytes,
            }
        )
    )


def _apply(scenario: Scenario, options: SimOptions) -> Scenario:
    broker = scenario.broker.model_dump()
    for key, value in (("host", options.host), ("port", options.port)):
        if value is not None:
            broker[key] = value
    if options.protocol is not None:
        broker["protocol"] = options.protocol
    update: dict[str, object] = {"broker": BrokerSection.model_validate(broker)}
    if options.duration is not None:
        update["duration_s"] = options.duration
    if options.truth is not None:
        update["truth"] = options.truth
    scenario = scenario.model_copy(update=update)
    if options.stores is not None:
        if options.stores < 1:
            raise ScenarioError("--stores: at least 1")
        scenario = scenario.scaled(options.stores)
    return scenario


async def _simulate(scenario: Scenario, console: Console) -> tuple[int, FleetStats]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    broker = scenario.broker
    settings = broker.settings()
    nodes = [(store.id, store.node) for store in scenario.stores]
    with console.status("checking that no other process runs these stores on the broker"):
        in_use = await asyncio.to_thread(nodes_in_use, settings, nodes)
    if in_use:
        console.print(f"[red]cannot simulate[/]: {describe_conflict(settings, in_use)}")
        return 1, FleetStats(stores=[], rss_bytes=0, cpu_percent=0.0)
    with tempfile.TemporaryDirectory(prefix="storegate-sim-") as state_dir:
        fleet = Fleet(scenario, state_dir=Path(state_dir))
        console.print(
            f"simulating {len(fleet.stores)} store(s) against"
            f" mqtt://{broker.host}:{broker.port} (MQTT {broker.protocol}); Ctrl-C stops"
        )
        started = time.monotonic()
        taken_over = False
        try:
            await fleet.start()
            with Live(_table(fleet.stats(), 0.0), console=console, refresh_per_second=1) as live:
                while not stop.is_set():
                    elapsed = time.monotonic() - started
                    if scenario.duration_s is not None and elapsed >= scenario.duration_s:
                        break
                    if failures := fleet.failures():
                        for store, exc in failures.items():
                            console.print(f"[red]store {store} stopped[/]: {exc}")
                        break
                    if taken := fleet.taken_over():
                        console.print(
                            f"[red]stopping[/]: {describe_conflict(settings, taken)}"
                            " (the broker handed our session to the other client)"
                        )
                        taken_over = True
                        break
                    live.update(_table(fleet.stats(), elapsed))
                    await _wait(stop, 1.0)
            console.line()
            last = fleet.stats()
        finally:
            await fleet.stop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
    _summary(console, last, time.monotonic() - started, scenario)
    return (1 if fleet.failures() or taken_over else 0), last


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _table(stats: FleetStats, elapsed: float) -> Table:
    table = Table(title=f"storegate sim: {elapsed:5.0f} s", title_justify="left")
    for column in ("store", "connected", "items on shelves", "messages acked", "outbox"):
        table.add_column(column, justify="left" if column == "store" else "right")
    rows = stats.stores if len(stats.stores) <= DETAILED_ROWS else []
    for s in rows:
        table.add_row(
            s.store,
            "yes" if s.connected else "[yellow]no[/]",
            str(s.items_on_shelves),
            str(s.messages_sent),
            str(s.outbox_depth),
        )
    table.add_row(
        f"[bold]{len(stats.stores)} stores[/]",
        f"{stats.connected}/{len(stats.stores)}",
        str(sum(s.items_on_shelves for s in stats.stores)),
        str(stats.messages_sent),
        str(sum(s.outbox_depth for s in stats.stores)),
    )
    table.caption = f"RSS {stats.rss_bytes / 2**20:.0f} MiB, CPU {stats.cpu_percent:.0f}%"
    return table


def _summary(console: Console, stats: FleetStats, elapsed: float, scenario: Scenario) -> None:
    stores = len(stats.stores)
    console.print(
        f"sim stopped after {elapsed:.0f} s: {stores} store(s), {stats.connected} connected,"
        f" {stats.messages_sent} messages acked by the broker,"
        f" RSS {stats.rss_bytes / 2**20:.0f} MiB ({stats.rss_bytes / 2**20 / stores:.1f} MiB"
        " per store)"
    )
    if scenario.truth is not None:
        console.print(f"ground truth: {scenario.truth}")
