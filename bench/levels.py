"""RFID change -> the online channel: local inventory feed and inventory-level webhook.

One process, one event loop, everything real: a simulated LLRP reader (TCP) -> the real
`sim-llrp` driver and presence engine in the real edge runtime (durable outbox) -> a real
Mosquitto -> the real cloud runtime (ingest into SQLite, inventory domain with its webhook
sender, the HTTP API) -> a real HTTP receiver for the webhook and an HTTP client polling
`GET /api/v1/feeds/local-inventory` every 50 ms.

An item is taken off a shelf; the clock starts when the edge presence engine hands out the
lower count (the RFID change: before that the reader's departure rule is deciding whether
the item is really gone, ~10 read cycles, which is the reader's business, not the path's)
and stops when the feed shows the lower on-hand, and when the webhook POST carrying it
arrives. Baseline, same run: the same change reaching the cloud's live bus (the commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench._support import Mosquitto
from bench.runner import Benchmark, Result, Row
from cloud.config import CloudSettings, hash_key
from cloud.runtime import CloudRuntime
from edge.config import EdgeSettings, create_drivers
from edge.rfid.epc import decode_epc
from edge.runtime import EdgeRuntime
from protocols.messages import CountDelta
from simulators.drivers.llrp import SimLlrpDriver

STORE, NODE, READER = "store-levels", "pi-1", "reader-1"
KEY, SECRET_ENV = "bench-levels-ops-key", "STOREGATE_BENCH_LEVELS_WEBHOOK_KEY"
TARGET_S = 2.0
POLL_S = 0.05
STAGGER_S = 1.5
SHELVES, ITEMS_PER_SHELF, PRODUCTS_PER_SHELF = 6, 12, 2


@dataclass
class _Change:
    gtin: str
    shelf: str
    before: int  # on the shelf (and in the store: the GTIN is on this shelf only)
    removed_at: float
    decided_at: float | None = None
    committed_at: float | None = None
    feed_at: float | None = None
    webhook_at: float | None = None

    def complete(self) -> bool:
        return None not in (self.decided_at, self.committed_at, self.feed_at, self.webhook_at)


class _Receiver:
    """A minimal HTTP/1.1 server that answers 204 and hands each JSON body on."""

    def __init__(self, on_body: Callable[[dict[str, Any]], None]) -> None:
        self.on_body = on_body
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.decode("latin-1").split("\r\n"):
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length)
            self.on_body(json.loads(body))
            writer.write(
                b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _measure(rounds: int, per_round: int, workdir: Path, port: int) -> list[_Change]:
    os.environ[SECRET_ENV] = "bench-levels-signing-key-0123456789"
    pending: dict[str, _Change] = {}
    done: list[_Change] = []

    def lower(gtin: str, on_hand: int, attribute: str) -> None:
        change = pending.get(gtin)
        if change is not None and on_hand < change.before and getattr(change, attribute) is None:
            setattr(change, attribute, time.time())

    def on_webhook(body: dict[str, Any]) -> None:
        for level in body.get("levels", []):
            lower(str(level["gtin"]), int(level["on_hand"]), "webhook_at")

    receiver = _Receiver(on_webhook)
    await receiver.start()
    cloud = CloudRuntime(
        CloudSettings(
            mqtt={"host": "127.0.0.1", "port": port},
            ingest={"client_id": "bench-levels", "spool_dir": str(workdir / "spool")},
            database_url=f"sqlite+aiosqlite:///{workdir}/cloud.db",
            api={"host": "127.0.0.1", "port": 0, "keys": [
                {"name": "ops", "role": "ops", "sha256": hash_key(KEY)}
            ]},
            stores=[{"id": STORE, "nodes": [NODE]}],
            domains={"inventory": {"webhook": {
                "url": f"http://127.0.0.1:{receiver.port}/hooks/levels",
                "secret_env": SECRET_ENV,
            }}},
        )
    )  # fmt: skip
    await cloud.start()
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
                    "antennas": SHELVES,
                    "items_per_shelf": ITEMS_PER_SHELF,
                    "products_per_shelf": PRODUCTS_PER_SHELF,
                    "seed": 5,
                },
            }
        ],
    )
    drivers = create_drivers(settings)
    driver = drivers[READER]
    assert isinstance(driver, SimLlrpDriver)
    world = driver.simulator.world
    drain = driver.engine.drain_counts

    def drain_and_note() -> list[CountDelta]:
        counts = drain()
        for delta in counts:
            change = pending.get(delta.gtin)
            if change and change.decided_at is None and delta.count < change.before:
                change.decided_at = time.time()
        return counts

    driver.engine.drain_counts = drain_and_note  # type: ignore[method-assign]
    subscription = cloud.bus.subscribe()

    async def watch_bus() -> None:
        while True:
            change = await subscription.get()
            if change.kind == "inventory" and change.store == STORE:
                for item in change.data["items"]:
                    lower(item["gtin"], item["count"], "committed_at")

    async def poll_feed(http: httpx.AsyncClient) -> None:
        while True:
            response = await http.get(
                "/api/v1/feeds/local-inventory",
                params={"format": "jsonl"},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            for line in response.text.splitlines():
                row = json.loads(line)
                lower(row["gtin"], row["on_hand"], "feed_at")
            await asyncio.sleep(POLL_S)

    edge = EdgeRuntime(settings, drivers, version="bench", handle_signals=False)
    edge_task = asyncio.create_task(edge.run())
    watcher = asyncio.create_task(watch_bus())
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{cloud.api_port}", timeout=10)
    poller = asyncio.create_task(poll_feed(http))
    rng = random.Random(11)
    try:
        async with asyncio.timeout(20):
            await driver.connected.wait()
        await asyncio.sleep(8)  # the engine settles and the cloud has every count
        for _ in range(rounds):
            truth = world.truth()
            shelves_of: dict[str, set[str]] = {}
            for epc, shelf in truth.items():
                shelves_of.setdefault(decode_epc(epc).gtin or "", set()).add(shelf)
            counts = {(c.shelf, c.gtin): c.count for c in driver.engine.shelf_counts()}
            # GTINs on one shelf whose count the engine has settled on (= the truth): the
            # lower count after a removal is then the removal's, nothing else's
            settled = sorted(
                gtin
                for gtin, shelves in shelves_of.items()
                if gtin
                and len(shelves) == 1
                and counts.get((next(iter(shelves)), gtin), 0)
                == sum(1 for e in truth if decode_epc(e).gtin == gtin)
            )
            # one removal every STAGGER_S: each lands in its own report, timed on its own
            for gtin in rng.sample(settled, min(per_round, len(settled))):
                shelf = next(iter(shelves_of[gtin]))
                epc = rng.choice(sorted(e for e, s in truth.items() if decode_epc(e).gtin == gtin))
                now = time.time()
                world.remove(epc, now)
                pending[gtin] = _Change(gtin, shelf, counts[(shelf, gtin)], now)
                await asyncio.sleep(STAGGER_S)
            deadline = time.monotonic() + 40
            while pending and time.monotonic() < deadline:
                for gtin in [g for g, c in pending.items() if c.complete()]:
                    done.append(pending.pop(gtin))
                await asyncio.sleep(0.1)
            done.extend(pending.values())  # incomplete ones are reported as missed
            pending.clear()
        return done
    finally:
        for task in (poller, watcher):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await http.aclose()
        edge.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(30):
                await edge_task
        subscription.close()
        await cloud.stop()
        await receiver.close()


def _row(name: str, values: list[float], target: bool, baseline: list[float]) -> Row:
    median = statistics.median(values) if values else float("nan")
    return Row(
        name,
        median,
        "s",
        baseline=statistics.median(baseline) if baseline else None,
        baseline_name="edge decided -> cloud commit (live bus), median" if baseline else None,
        target=f"<= {TARGET_S:.0f} s (median)" if target else None,
        passed=(bool(values) and median <= TARGET_S) if target else None,
        spread=(min(values), max(values)) if values else None,
    )


def run(quick: bool) -> Result:
    rounds, per_round = (1, 5) if quick else (2, 5)
    workdir = Path(tempfile.mkdtemp(prefix="bench-levels-"))
    broker = Mosquitto(workdir)
    try:
        changes = asyncio.run(_measure(rounds, per_round, workdir, broker.port))
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    timed = [c for c in changes if c.complete()]

    def spans(attribute: str) -> list[float]:
        return [getattr(c, attribute) - c.decided_at for c in timed]

    committed = spans("committed_at")
    rows = [
        _row("RFID change -> local inventory feed shows it", spans("feed_at"), True, committed),
        _row("RFID change -> inventory-level webhook POST", spans("webhook_at"), True, committed),
        _row("RFID change -> cloud commit (live bus)", committed, False, []),
        _row(
            "removal -> webhook (incl. the departure rule)",
            [c.webhook_at - c.removed_at for c in timed if c.webhook_at],
            False,
            [],
        ),
    ]
    notes = [
        f"{len(timed)} removals timed of {len(changes)} ({rounds} rounds of {per_round}, each"
        f" on a GTIN held by one shelf of {SHELVES} x {ITEMS_PER_SHELF} items); value: median,"
        " in brackets min to max",
        f"the feed is polled every {POLL_S * 1000:.0f} ms (up to that much of its figure);"
        " the webhook waits its debounce_s (0.5 s, the default) to coalesce changes",
        "edge, Mosquitto, cloud (SQLite) and receiver on this machine, real time, 1 s read cycles",
    ]
    return Result(rows, notes)


BENCHMARK = Benchmark(
    name="levels", title="RFID change -> local inventory feed and level webhook", run=run
)
