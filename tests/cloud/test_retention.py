"""Dead letters and the SQL history table expire by policy, on SQLite and PostgreSQL, and
the cloud runtime runs the policy by itself."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.config import CloudSettings
from cloud.runtime import CloudRuntime
from cloud.state import schema
from cloud.state.db import create_engine, migrate
from cloud.state.retention import RetentionPolicy, expire
from cloud.timeseries.sql import history_table
from tests.cloud.cloudproc import cloud_config
from tests.servers import MosquittoBroker

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
MS = timedelta(milliseconds=1)


async def add_dead_letters(engine: AsyncEngine, ages: dict[str, timedelta]) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(schema.dead_letters),
            [
                {
                    "topic": name,
                    "payload_excerpt": "",
                    "payload_bytes": 0,
                    "reason": "invalid_json",
                    "detail": "",
                    "store_id": None,
                    "received_at": NOW - age,
                }
                for name, age in ages.items()
            ],
        )


async def add_history(engine: AsyncEngine, ages: dict[str, timedelta]) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            insert(history_table),
            [
                {
                    "measurement": "shelf_count",
                    "series": f"shelf={name}",
                    "time_ns": int((NOW - age).timestamp() * 1000) * 1_000_000,
                    "store": "store-042",
                    "tags": {"shelf": name},
                    "fields": {"count": 1},
                }
                for name, age in ages.items()
            ],
        )


async def names(engine: AsyncEngine, column: object) -> set[str]:
    async with engine.connect() as connection:
        return set((await connection.execute(select(column))).scalars())  # type: ignore[call-overload]


async def test_old_rows_go_and_recent_ones_stay(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate(engine)
        days30, days90 = timedelta(days=30), timedelta(days=90)
        await add_dead_letters(
            engine,
            {
                "a-year": timedelta(days=365),
                **{f"old-{i}": days30 + i * SECOND for i in range(1, 6)},
                "exactly-30-days": days30,
                "a-ms-younger": days30 - MS,
                "new": timedelta(0),
            },
        )
        await add_history(
            engine,
            {
                "two-years": timedelta(days=730),
                "a-year": timedelta(days=365),
                "exactly-90-days": days90,
                "a-ms-younger": days90 - MS,
                "31-days": timedelta(days=31),  # older than the dead letters' limit: stays
                "new": timedelta(0),
            },
        )
        # batch_rows=2: the seven old dead letters go in four statements and the three old
        # points in two, none left over
        policy = RetentionPolicy(dead_letters_days=30, history_days=90, batch_rows=2)
        removed = await expire(engine, policy, now=NOW)
        assert removed == {"dead_letters": 7, "history": 3}
        assert await names(engine, schema.dead_letters.c.topic) == {"a-ms-younger", "new"}
        assert await names(engine, history_table.c.series) == {
            "shelf=a-ms-younger",
            "shelf=31-days",
            "shelf=new",
        }
        assert await expire(engine, policy, now=NOW) == {"dead_letters": 0, "history": 0}
    finally:
        await engine.dispose()


async def test_the_runtime_expires_by_itself_and_counts_it(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    config = cloud_config(mosquitto_broker.port, tmp_path, stores={"store-042": ["pi-1"]})
    config["retention"] = {"dead_letters_days": 30, "interval_s": 0.2}
    settings = CloudSettings(**config)
    engine = create_engine(settings.database_url)
    await migrate(engine)
    now = datetime.now(UTC)
    async with engine.begin() as connection:
        await connection.execute(
            insert(schema.dead_letters),
            [
                {
                    "topic": topic,
                    "payload_excerpt": "",
                    "payload_bytes": 0,
                    "reason": "invalid_json",
                    "detail": "",
                    "received_at": now - age,
                }
                for topic, age in [("old", timedelta(days=31)), ("recent", timedelta(days=29))]
            ],
        )
    await engine.dispose()
    runtime = CloudRuntime(settings)
    await runtime.start(serve_api=False)
    try:
        for _ in range(100):
            if runtime.retention.passes >= 2:
                break
            await asyncio.sleep(0.05)
        assert runtime.retention.passes >= 2  # once at start, then every interval_s
        assert await names(runtime.engine, schema.dead_letters.c.topic) == {"recent"}
        expired = runtime.metrics.registry.get_sample_value(
            "storegate_rows_expired_total", {"table": "dead_letters"}
        )
        assert expired == 1
    finally:
        await runtime.stop()
