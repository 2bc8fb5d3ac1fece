"""Online order placed -> reserved: HTTP intake to the committed reservation.

Everything real: `python -m storegate cloud` in its own process (lockers domain, stock
reservations on), on SQLite and on a real PostgreSQL (started here, loopback), and
concurrent shoppers placing orders through `POST /api/v1/orders`. The answer (201) comes
after the commit of the order and its reservation, so the HTTP round trip is the subject.
The store's shelves are seeded with plenty of stock: every order is accepted, and every
order takes the (store, GTIN) counter rows' locks like a real one.

Per database: one cloud, a warm-up, then RUNS rounds of SHOPPERS concurrent shoppers each
placing ORDERS_PER_SHOPPER orders one after the other; the p99 of each round, the median
of the rounds with their min-max.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from bench._support import CloudProcess, Mosquitto, Postgres, free_port
from bench.runner import Benchmark, Result, Row
from cloud.config import hash_key
from protocols.messages import utc_now

STORE, NODE = "store-001", "pi-1"
GTINS = [f"0950600013{n:04d}" for n in range(50)]
SHOPPERS, RUNS = 16, 5
TARGET_P99_MS = 200.0
SHOPPER_KEY = "bench-shopper-key"
REPO_ROOT = Path(__file__).resolve().parent.parent


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _seed(database_url: str) -> None:
    """Migrate, and put 1,000,000 units of each GTIN on the store's shelf."""
    from cloud.state import schema
    from cloud.state.db import create_engine, migrate

    engine = create_engine(database_url)
    await migrate(engine)
    now = utc_now()
    async with engine.begin() as connection:
        await connection.execute(
            schema.stores.insert(), [{"store_id": STORE, "name": "", "created_at": now}]
        )
        await connection.execute(
            schema.inventory.insert(),
            [
                {
                    "store_id": STORE,
                    "shelf": "shelf-1",
                    "gtin": gtin,
                    "node_id": NODE,
                    "count": 1_000_000,
                    "updated_at": now,
                }
                for gtin in GTINS
            ],
        )
    await engine.dispose()


def _cloud(workdir: Path, broker_port: int, database_url: str) -> CloudProcess:
    config = {
        "mqtt": {"host": "127.0.0.1", "port": broker_port},
        "ingest": {"client_id": "bench-orders-cloud", "spool_dir": str(workdir / "spool")},
        "database_url": database_url,
        "api": {
            "host": "127.0.0.1",
            "port": free_port(),
            "keys": [{"name": "shop", "role": "shopper_app", "sha256": hash_key(SHOPPER_KEY)}],
        },
        "stores": [{"id": STORE, "nodes": [NODE]}],
        "domains": {"lockers": {"reserve_stock": True}},
    }
    return CloudProcess(workdir, config)


async def _round(port: int, orders_each: int) -> tuple[list[float], int]:
    """SHOPPERS shoppers at once, each placing `orders_each` orders: (latencies ms, refused)."""
    latencies: list[float] = []
    refused = 0
    headers = {"Authorization": f"Bearer {SHOPPER_KEY}"}
    limits = httpx.Limits(max_connections=SHOPPERS)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30, limits=limits
    ) as http:

        async def shopper(k: int) -> None:
            nonlocal refused
            for n in range(orders_each):
                body = {
                    "external_id": uuid.uuid4().hex,
                    "store": STORE,
                    "lines": [
                        {"gtin": GTINS[(k * 7 + n) % len(GTINS)], "quantity": 1},
                        {"gtin": GTINS[(k * 13 + n * 3 + 1) % len(GTINS)], "quantity": 2},
                    ],
                    "method": "counter",
                }
                sent = time.perf_counter()
                response = await http.post("/api/v1/orders", json=body)
                took = (time.perf_counter() - sent) * 1000
                if response.status_code == 201:
                    latencies.append(took)
                else:
                    refused += 1

        await asyncio.gather(*(shopper(k) for k in range(SHOPPERS)))
    return latencies, refused


def _measure(
    workdir: Path, broker_port: int, database_url: str, orders_each: int
) -> dict[str, float]:
    asyncio.run(_seed(database_url))
    cloud = _cloud(workdir, broker_port, database_url)
    try:
        asyncio.run(_round(cloud.api_port, 3))  # warm-up: connections, caches
        p99s, p50s, refused, placed = [], [], 0, 0
        for _ in range(RUNS):
            latencies, bad = asyncio.run(_round(cloud.api_port, orders_each))
            p99s.append(_percentile(latencies, 0.99))
            p50s.append(_percentile(latencies, 0.5))
            refused += bad
            placed += len(latencies)
    finally:
        cloud.stop()
    return {
        "p99": statistics.median(p99s),
        "p99_min": min(p99s),
        "p99_max": max(p99s),
        "p50": statistics.median(p50s),
        "p50_min": min(p50s),
        "p50_max": max(p50s),
        "refused": refused,
        "placed": placed,
    }


def run(quick: bool) -> Result:
    orders_each = 10 if quick else 25
    workdir = Path(tempfile.mkdtemp(prefix="bench-orders-"))
    broker = Mosquitto(workdir)
    results: dict[str, dict[str, float]] = {}
    try:
        sqlite_dir = workdir / "sqlite"
        sqlite_dir.mkdir()
        results["SQLite"] = _measure(
            sqlite_dir, broker.port, f"sqlite+aiosqlite:///{sqlite_dir}/state.db", orders_each
        )
        postgres = Postgres()
        try:
            pg_dir = workdir / "postgresql"
            pg_dir.mkdir()
            url = postgres.create_database("bench_orders")
            results["PostgreSQL"] = _measure(pg_dir, broker.port, url, orders_each)
        finally:
            postgres.stop()
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for name, r in results.items():
        rows.append(
            Row(
                f"{name}: placed -> reserved p99",
                r["p99"],
                "ms",
                spread=(r["p99_min"], r["p99_max"]),
                target=f"<= {TARGET_P99_MS:g} ms",
                passed=r["p99"] <= TARGET_P99_MS and r["refused"] == 0,
            )
        )
        rows.append(
            Row(
                f"{name}: placed -> reserved p50",
                r["p50"],
                "ms",
                spread=(r["p50_min"], r["p50_max"]),
            )
        )
        rows.append(
            Row(
                f"{name}: orders refused",
                r["refused"],
                "orders",
                target="0",
                passed=r["refused"] == 0,
            )
        )
    per_round = SHOPPERS * orders_each
    return Result(
        rows=rows,
        notes=[
            f"{SHOPPERS} concurrent shoppers, {orders_each} orders each per round ({per_round}"
            f" orders), {RUNS} rounds per database after a warm-up; the median of the rounds'"
            " percentiles, min-max in brackets",
            "an order: 2 lines (of 50 GTINs, 1,000,000 units each on one shelf), method"
            " counter, a fresh external_id; latency = HTTP POST /api/v1/orders until its 201"
            " (sent after the order and its reservation committed)",
            "cloud: `storegate cloud` in its own process (uvicorn, one worker), SQLite (WAL)"
            " or PostgreSQL (loopback, fsync on) on the same machine as the shoppers",
        ],
    )


BENCHMARK = Benchmark(name="orders", title="Online order placed -> reserved", run=run)
