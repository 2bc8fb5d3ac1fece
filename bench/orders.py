"""Order placed -> reserved: the online channel's `POST /api/v1/orders` until its answer.

The reservation is taken in the transaction that records the order (cloud/lockers/intake.py,
cloud/inventory/stock.py), so the answer (201, status reserved) is the moment the units are
held: the latency the platform sees is the latency of the promise.

Everything real: a `storegate cloud` child process (its default configuration; only the
database differs between the SQLite and PostgreSQL rows), a real Mosquitto, a real
PostgreSQL with its default durability (fsync on), the store's shelves arriving as an
edge's birth over MQTT. Concurrent shoppers are HTTP clients in this process, each placing
orders one after another for one unit of a random GTIN; GTINs repeat, so orders contend for
the same counters (and some find nothing left: 409, timed too). Baseline, same run and same
concurrency: `GET /api/v1/orders/{id}` of an order just placed (the API's floor: auth, one
read, the JSON answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from bench._support import Mosquitto, Postgres, free_port
from bench.runner import Benchmark, Result, Row
from cloud.config import hash_key
from protocols.codec import encode, topic_for
from protocols.messages import Birth, ShelfCount

STORE, NODE = "store-orders", "pi-1"
PRODUCTS, SHELVES, UNITS_PER_SHELF = 200, 2, 25  # 10,000 units on the shelves
SHOPPERS = 16
TARGET_P99_S = 0.2
ROOT = Path(__file__).resolve().parent.parent


def gtin(n: int) -> str:
    body = f"0{40000000 + n:012d}"[:13]
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


class _Cloud:
    """`python -m storegate cloud -c cloud.yaml`, as an operator starts it."""

    def __init__(self, workdir: Path, broker_port: int, database_url: str, key: str) -> None:
        self.port = free_port()
        config = {
            "mqtt": {"host": "127.0.0.1", "port": broker_port},
            "ingest": {"client_id": "bench-orders", "spool_dir": str(workdir / "spool")},
            "database_url": database_url,
            "api": {
                "host": "127.0.0.1",
                "port": self.port,
                "keys": [{"name": "shop", "role": "shopper_app", "sha256": hash_key(key)}],
            },
            "stores": [{"id": STORE, "nodes": [NODE]}],
        }
        path = workdir / "cloud.yaml"
        path.write_text(yaml.safe_dump(config))
        self.log = workdir / "cloud.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "storegate",
                    "cloud",
                    "-c",
                    str(path),
                    "--log-level",
                    "warning",
                ],
                stdout=log,
                stderr=log,
                cwd=workdir,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"cloud did not get ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def _shelves() -> list[ShelfCount]:
    return [
        ShelfCount(shelf=f"shelf-{n % 40:02d}-{s}", gtin=gtin(n), count=UNITS_PER_SHELF)
        for n in range(PRODUCTS)
        for s in range(SHELVES)
    ]


def _publish_birth(broker_port: int) -> None:
    """The store's shelves, as its edge announces them on connect."""
    birth = Birth(store=STORE, node=NODE, seq=0, bd_seq=1, version="bench", shelves=_shelves())
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-orders-edge")
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    try:
        client.publish(topic_for(birth), encode(birth), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


async def _stocked(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """Wait until the cloud has applied the birth: an order for the last GTIN succeeds."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        response = await http.post(
            "/api/v1/orders",
            headers=headers,
            json=_body("warm-up", gtin(PRODUCTS - 1)),
        )
        if response.status_code in (200, 201):
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the cloud never had the shelves of the birth")


def _body(external_id: str, product: str) -> dict[str, Any]:
    return {
        "external_id": external_id,
        "store": STORE,
        "lines": [{"gtin": product, "quantity": 1}],
        "method": "counter",
    }


async def _shop(url: str, key: str, orders: int, run: int) -> tuple[list[float], list[float], int]:
    """SHOPPERS concurrent clients place `orders` orders in all; returns placement
    latencies, baseline read latencies and how many were refused for lack of stock."""
    headers = {"Authorization": f"Bearer {key}"}
    placed: list[float] = []
    reads: list[float] = []
    refused = 0
    rng = random.Random(run)
    limits = httpx.Limits(max_connections=SHOPPERS, max_keepalive_connections=SHOPPERS)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        if run == 0:
            await _stocked(http, headers)
        queue = list(range(orders))

        async def shopper(n: int) -> None:
            nonlocal refused
            while queue:
                i = queue.pop()
                body = _body(f"run{run}-{n}-{i}", gtin(rng.randrange(PRODUCTS)))
                start = time.perf_counter()
                response = await http.post("/api/v1/orders", headers=headers, json=body)
                placed.append(time.perf_counter() - start)
                if response.status_code == 409:
                    refused += 1
                    continue
                if response.status_code not in (200, 201):
                    raise RuntimeError(f"order refused: {response.status_code} {response.text}")
                order_id = response.json()["order_id"]
                start = time.perf_counter()
                read = await http.get(f"/api/v1/orders/{order_id}", headers=headers)
                reads.append(time.perf_counter() - start)
                read.raise_for_status()

        await asyncio.gather(*(shopper(n) for n in range(SHOPPERS)))
    return placed, reads, refused


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _measure(database: str, runs: int, orders: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-orders-{database}-"))
    broker = Mosquitto(workdir)
    postgres = Postgres(workdir) if database == "postgresql" else None
    url = (
        postgres.create_database()
        if postgres is not None
        else f"sqlite+aiosqlite:///{workdir}/cloud.db"
    )
    key = secrets.token_urlsafe(24)
    cloud = _Cloud(workdir, broker.port, url, key)
    per_run: list[tuple[float, float, float, float, float]] = []
    refused = 0
    try:
        cloud.wait_ready()
        _publish_birth(broker.port)
        for run in range(runs):
            started = time.perf_counter()
            placed, reads, run_refused = asyncio.run(_shop(cloud.url, key, orders, run))
            rate = len(placed) / (time.perf_counter() - started)
            refused += run_refused
            per_run.append(
                (_p(placed, 0.5), _p(placed, 0.99), _p(reads, 0.5), _p(reads, 0.99), rate)
            )
    finally:
        cloud.stop()
        broker.stop()
        if postgres is not None:
            postgres.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"per_run": per_run, "refused": refused}


def _median_row(
    name: str, values: list[float], baseline: list[float], baseline_name: str, target: bool
) -> Row:
    median = statistics.median(values)
    return Row(
        name,
        median * 1000,
        "ms",
        baseline=statistics.median(baseline) * 1000,
        baseline_name=baseline_name,
        target=f"<= {TARGET_P99_S * 1000:.0f} ms" if target else None,
        passed=median <= TARGET_P99_S if target else None,
        spread=(min(values) * 1000, max(values) * 1000),
    )


def run(quick: bool) -> Result:
    runs, orders = (2, 100) if quick else (5, 400)
    rows: list[Row] = []
    notes = [
        f"{runs} runs per database, each {orders} orders by {SHOPPERS} concurrent shoppers"
        f" (one unit of one of {PRODUCTS} GTINs, {SHELVES * UNITS_PER_SHELF} units each,"
        " pickup at the counter); value: median over runs of the run's percentile, in"
        " brackets min to max over runs",
        "clock: the POST sent -> its answer received (201 reserved, or 409 when the GTIN had"
        " nothing left to promise); baseline: GET of the order just placed, same clients",
        "cloud in its own process with its default configuration; PostgreSQL with fsync on;"
        " clients, cloud, broker and database share this 2-core machine",
    ]
    for database in ("sqlite", "postgresql"):
        measured = _measure(database, runs, orders)
        per_run = measured["per_run"]
        p50 = [r[0] for r in per_run]
        p99 = [r[1] for r in per_run]
        read50 = [r[2] for r in per_run]
        read99 = [r[3] for r in per_run]
        rows.append(
            _median_row(
                f"order placed -> reserved, p99 ({database})",
                p99,
                read99,
                "GET the order, p99",
                True,
            )
        )
        rows.append(
            _median_row(
                f"order placed -> reserved, p50 ({database})",
                p50,
                read50,
                "GET the order, p50",
                False,
            )
        )
        rates = [r[4] for r in per_run]
        rows.append(
            Row(
                f"orders placed per second, {SHOPPERS} shoppers ({database})",
                statistics.median(rates),
                "/s",
                spread=(min(rates), max(rates)),
            )
        )
        notes.append(f"{database}: {measured['refused']} orders found nothing left (409)")
    return Result(rows, notes)


BENCHMARK = Benchmark(name="orders", title="Order placed -> reserved", run=run)
