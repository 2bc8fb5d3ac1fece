"""Serve a store-sized RFID deployment as simulated LLRP readers, in a process of its own:

    python -m simulators.llrp.serve examples/real-store.yaml --ports-file ports.json

One TCP LLRP reader per reader of the scenario's first store with an `rfid:` section, all
reading one store world (`simulators.scenario.rfid_store`), while people carry items past
readers at the scenario's rate (half of them taken for good and restocked). The ports file
(JSON: reader id -> {"port", "shelves"}) is written once every reader listens; an edge
daemon in another process connects to them with the real `llrp` driver. Runs until SIGTERM
or `--duration`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path

from simulators.llrp.reader import SimulatedReader
from simulators.scenario.model import load_scenario
from simulators.scenario.rfid_store import build_rfid_store


async def serve(
    scenario_path: Path, ports_file: Path, items: int | None, duration: float | None
) -> None:
    scenario = load_scenario(scenario_path)
    store_section = next((s for s in scenario.stores if s.rfid is not None), None)
    if store_section is None or store_section.rfid is None:
        raise SystemExit(f"{scenario_path}: no store has an rfid section")
    store = build_rfid_store(store_section.rfid, scenario.seed, items, time.time())
    readers = [SimulatedReader(reader.view) for reader in store.readers]
    for sim in readers:
        await sim.start()
    ports = {
        reader.id: {"port": sim.port, "shelves": reader.shelves}
        for reader, sim in zip(store.readers, readers, strict=True)
    }
    await asyncio.to_thread(ports_file.write_text, json.dumps(ports))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    per_s = store_section.rfid.rf.carried_per_minute / 60
    owed = 0.0
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await stop.wait()
            owed += per_s
            while owed >= 1:
                owed -= 1
                gone = store.rng.random() < 0.5
                taken = store.carry_one(time.time(), back=not gone)
                if gone and taken is not None:  # staff restock what went; none in an empty store
                    store.restock_one(time.time())
            store.world.history.clear()  # nobody reads the truth here
    finally:
        for sim in readers:
            await sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--ports-file", type=Path, required=True)
    parser.add_argument("--items", type=int, default=None, help="override the item count")
    parser.add_argument("--duration", type=float, default=None)
    args = parser.parse_args()
    asyncio.run(serve(args.scenario, args.ports_file, args.items, args.duration))


if __name__ == "__main__":
    main()
