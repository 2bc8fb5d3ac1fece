"""The InfluxQL reader against a real InfluxDB 1.6, and the SQL reader on the same points."""

# This file builds InfluxQL text on purpose (S608 is about SQL built from input).
# ruff: noqa: S608

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from cloud.timeseries import (
    HistoryUnavailable,
    InfluxQLReader,
    QueryError,
    ShelfCountSample,
    SqlHistoryReader,
    SqlSink,
    check_read_only,
    create_all,
    duration_literal,
    lines_for,
    quote_ident,
    quote_literal,
)
from cloud.timeseries.schema import time_ns
from cloud.timeseries.stock import stock_level_line
from tests.samples import GTIN, STORE, all_samples
from tests.servers import free_port
from tests.timeseries.test_sql import shelf_line
from tests.timeseries.tsservers import Influxd

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
DB = "storegate"

LINES = [
    shelf_line("s1", 5, T + timedelta(seconds=10)),
    shelf_line("s1", 4, T + timedelta(seconds=50)),
    shelf_line("s1", 9, T + timedelta(minutes=2, seconds=1)),
    shelf_line("s2", 1, T + timedelta(minutes=1)),
    shelf_line("s1", 77, T + timedelta(minutes=1), gtin="00000000000017"),
    shelf_line("s1", 88, T + timedelta(minutes=1), store="store-other"),
]


@pytest.mark.parametrize(
    "q",
    ["SELECT 1 FROM m", "show measurements", "SELECT \"into\" FROM m WHERE s = 'a;DROP'"],
)
def test_read_only_check_accepts_reads(q: str) -> None:
    check_read_only(q)


@pytest.mark.parametrize(
    "q",
    ["DROP DATABASE x", "SELECT * INTO y FROM m", "SELECT 1; DELETE FROM m", "SELECT 'x"],
)
def test_read_only_check_refuses_writes(q: str) -> None:
    with pytest.raises(QueryError):
        check_read_only(q)


def test_quoting() -> None:
    assert quote_ident('we"ird\\') == '"we\\"ird\\\\"'
    assert quote_literal("it's\\") == "'it\\'s\\\\'"
    assert duration_literal(timedelta(minutes=5)) == "300s"
    assert duration_literal(timedelta(milliseconds=1500)) == "1500ms"
    with pytest.raises(ValueError, match="positive"):
        duration_literal(timedelta(0))
    with pytest.raises(ValueError, match="invalid"):
        quote_literal("new\nline")


async def test_shelf_count_history_over_influxql(influxd: Influxd, tmp_path: Path) -> None:
    influxd.create_database(DB)
    influxd.write(DB, LINES)
    reader = InfluxQLReader(influxd.url, DB)
    try:
        window = (T, T + timedelta(minutes=3), timedelta(minutes=1))
        samples = await reader.shelf_count_history(STORE, GTIN, *window)
        assert samples == [
            ShelfCountSample(T, "s1", 4),
            ShelfCountSample(T + timedelta(minutes=1), "s1", 4),
            ShelfCountSample(T + timedelta(minutes=2), "s1", 9),
            ShelfCountSample(T, "s2", None),
            ShelfCountSample(T + timedelta(minutes=1), "s2", 1),
            ShelfCountSample(T + timedelta(minutes=2), "s2", 1),
        ]
        only_s2 = await reader.shelf_count_history(STORE, GTIN, *window, shelf="s2")
        assert [s.count for s in only_s2] == [None, 1, 1]

        # The SQL fallback answers the same question identically from the same lines.
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
        await create_all(engine)
        await SqlSink(engine).write(LINES)
        assert await SqlHistoryReader(engine).shelf_count_history(STORE, GTIN, *window) == samples
        await engine.dispose()
    finally:
        await reader.close()


def _level(shelf: str, count: int, at: datetime, *, gtin: str = GTIN) -> str:
    return stock_level_line(STORE, shelf, gtin, count, time_ns(at), snapshot=False)


LEVELS = [
    _level("s1", 7, T - timedelta(hours=3)),  # beyond the lookback: not a start
    _level("s1", 6, T - timedelta(hours=1)),  # the level s1 starts the window with
    _level("s1", 5, T + timedelta(minutes=1, seconds=30)),
    _level("s2", 2, T - timedelta(minutes=30)),  # s2 does not change in the window
    _level("s3", 1, T - timedelta(hours=5)),  # too old to be found
    _level("s3", 4, T + timedelta(minutes=2)),
    _level("s1", 99, T - timedelta(minutes=5), gtin="00000000000017"),
]


async def test_stock_level_history_starts_with_the_level_before_the_window(
    influxd: Influxd, tmp_path: Path
) -> None:
    influxd.create_database(DB)
    influxd.write(DB, LEVELS)
    lookback = timedelta(hours=2)
    reader = InfluxQLReader(influxd.url, DB, level_lookback=lookback)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}")
    try:
        window = (T, T + timedelta(minutes=3), timedelta(minutes=1))
        samples = await reader.stock_level_history(STORE, GTIN, *window)
        by_shelf: dict[str, list[int | None]] = {}
        for sample in samples:
            by_shelf.setdefault(sample.shelf, []).append(sample.count)
        assert by_shelf == {"s1": [6, 5, 5], "s2": [2, 2, 2], "s3": [None, None, 4]}
        assert [s.time for s in samples[:3]] == [T + timedelta(minutes=m) for m in range(3)]
        only_s2 = await reader.stock_level_history(STORE, GTIN, *window, shelf="s2")
        assert [s.count for s in only_s2] == [2, 2, 2]

        # The SQL fallback answers the same question identically from the same lines.
        await create_all(engine)
        await SqlSink(engine).write(LEVELS)
        sql = SqlHistoryReader(engine, level_lookback=lookback)
        assert await sql.stock_level_history(STORE, GTIN, *window) == samples
    finally:
        await reader.close()
        await engine.dispose()


async def test_generic_query_returns_typed_series(influxd: Influxd) -> None:
    influxd.create_database(DB)
    influxd.write(DB, lines_for(all_samples()))
    reader = InfluxQLReader(influxd.url, DB)
    try:
        q = (
            f"SELECT {quote_ident('epc')}, {quote_ident('rssi')} FROM {quote_ident('item_event')} "
            f"WHERE {quote_ident('store')} = {quote_literal(STORE)} GROUP BY {quote_ident('kind')}"
        )
        series = await reader.query(q)
        by_kind = {s.tags["kind"]: s.rows() for s in series}
        assert set(by_kind) == {"arrived", "departed"}
        [arrived] = by_kind["arrived"]
        assert arrived["epc"] == "3074257BF7194E4000001A85"
        assert arrived["rssi"] == -52.5
        assert isinstance(arrived["time"], int)  # epoch=ns

        # An injection attempt stays a string literal: it matches nothing, and breaks nothing.
        evil = "store-042' OR '1'='1"
        where = f"{quote_ident('store')} = {quote_literal(evil)}"
        q = f"SELECT * FROM {quote_ident('item_event')} WHERE {where}"
        assert await reader.query(q) == []
        with pytest.raises(ValueError, match="invalid store"):
            await reader.shelf_count_history(
                evil, GTIN, T, T + timedelta(hours=1), timedelta(minutes=1)
            )

        with pytest.raises(QueryError, match="error parsing query"):
            await reader.query("SELECT FROM WHERE")
        # The reader is read-only: statements that change data never reach the server.
        for statement in (
            f"DROP MEASUREMENT {quote_ident('item_event')}",
            f"SELECT * INTO {quote_ident('copy')} FROM {quote_ident('item_event')}",
            f"SELECT * FROM {quote_ident('item_event')}; DROP DATABASE {quote_ident(DB)}",
        ):
            with pytest.raises(QueryError, match="read-only"):
                await reader.query(statement)
        assert await reader.query(f"SELECT count(*) FROM {quote_ident('item_event')}") != []
        # ...while INTO or DROP inside quotes is just text.
        q = f"SELECT * FROM {quote_ident('item_event')} WHERE {quote_ident('epc')} = 'INTO; DROP'"
        assert await reader.query(q) == []
    finally:
        await reader.close()


async def test_unreachable_server_is_history_unavailable() -> None:
    reader = InfluxQLReader(f"http://127.0.0.1:{free_port()}", DB, timeout_s=2)
    try:
        with pytest.raises(HistoryUnavailable):
            await reader.query("SHOW MEASUREMENTS")
    finally:
        await reader.close()


async def test_escaped_lines_round_trip_through_a_real_influxdb(influxd: Influxd) -> None:
    """What we encode, InfluxDB reads back as the same names and values."""
    from cloud.timeseries import Point, encode

    tags = {"zone name": "a,b=c d", "store": STORE}
    fields: dict[str, str | int | float | bool] = {
        "note": 'say "hi" \\ back, then=go',
        "field with space": 2,
        "f": -1.25,
        "ok": True,
    }
    influxd.create_database(DB)
    influxd.write(DB, [encode(Point("odd meas,x", tags, fields, 1_700_000_000_123_456_789))])
    reader = InfluxQLReader(influxd.url, DB)
    try:
        [series] = await reader.query(f"SELECT * FROM {quote_ident('odd meas,x')}")
        assert series.name == "odd meas,x"
        [row] = series.rows()
        assert row == {"time": 1_700_000_000_123_456_789, **tags, **fields}
    finally:
        await reader.close()
