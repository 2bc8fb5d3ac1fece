from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.timeseries import (
    Point,
    ShelfCountSample,
    SinkRejected,
    SqlHistoryReader,
    SqlSink,
    create_all,
    encode,
    history_table,
    lines_for,
    timeseries_metadata,
)
from cloud.timeseries.schema import time_ns
from tests.samples import GTIN, STORE, all_samples

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """The history table on SQLite and on a real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'history.db'}"
    else:
        url = request.getfixturevalue("postgres").url
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(timeseries_metadata.drop_all)
    await create_all(engine)
    yield engine
    await engine.dispose()


def shelf_line(shelf: str, count: int, at: datetime, gtin: str = GTIN, store: str = STORE) -> str:
    tags = {"store": store, "shelf": shelf, "gtin": gtin}
    return encode(Point("shelf_count", tags, {"count": count}, time_ns(at)))


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(history_table))).scalar_one()
        )


async def test_sql_sink_stores_every_sample_point_and_rewrites_are_idempotent(
    engine: AsyncEngine,
) -> None:
    lines = lines_for(all_samples())
    sink = SqlSink(engine)
    await sink.write(lines)
    stored = await _rows(engine)
    # Points that share measurement, tags and time collapse, as in InfluxDB.
    assert stored == len({line.rsplit(" ", 2)[0] + line.rsplit(" ", 1)[1] for line in lines})
    await sink.write(lines)  # redelivery after a crash between spool and commit
    assert await _rows(engine) == stored


async def test_sql_sink_rejects_unparsable_lines(engine: AsyncEngine) -> None:
    with pytest.raises(SinkRejected, match="history table"):
        await SqlSink(engine).write(["not line protocol"])
    assert await _rows(engine) == 0


async def test_sql_reader_last_count_per_interval_with_fill(engine: AsyncEngine) -> None:
    await SqlSink(engine).write(
        [
            shelf_line("s1", 5, T + timedelta(seconds=10)),
            shelf_line("s1", 4, T + timedelta(seconds=50)),  # the last in its minute wins
            shelf_line("s1", 9, T + timedelta(minutes=2, seconds=1)),
            shelf_line("s2", 1, T + timedelta(minutes=1)),
            shelf_line("s1", 77, T + timedelta(minutes=1), gtin="00000000000017"),  # other GTIN
            shelf_line("s1", 88, T + timedelta(minutes=1), store="store-other"),  # other store
        ]
    )
    reader = SqlHistoryReader(engine)
    samples = await reader.shelf_count_history(
        STORE, GTIN, T, T + timedelta(minutes=3), timedelta(minutes=1)
    )
    assert samples == [
        ShelfCountSample(T, "s1", 4),
        ShelfCountSample(T + timedelta(minutes=1), "s1", 4),
        ShelfCountSample(T + timedelta(minutes=2), "s1", 9),
        ShelfCountSample(T, "s2", None),
        ShelfCountSample(T + timedelta(minutes=1), "s2", 1),
        ShelfCountSample(T + timedelta(minutes=2), "s2", 1),
    ]
    only_s2 = await reader.shelf_count_history(
        STORE, GTIN, T, T + timedelta(minutes=3), timedelta(minutes=1), shelf="s2"
    )
    assert {s.shelf for s in only_s2} == {"s2"}


@pytest.mark.parametrize(
    ("store", "gtin", "shelf"),
    [("x' OR '1'='1", GTIN, None), (STORE, "123", None), (STORE, GTIN, 'a"b')],
)
async def test_readers_refuse_invalid_identifiers(
    engine: AsyncEngine, store: str, gtin: str, shelf: str | None
) -> None:
    with pytest.raises(ValueError, match="invalid"):
        await SqlHistoryReader(engine).shelf_count_history(
            store, gtin, T, T + timedelta(hours=1), timedelta(minutes=1), shelf=shelf
        )
