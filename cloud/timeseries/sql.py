"""The SQL fallback for history: a `history` table, its sink, for deployments without InfluxDB.

The table lives on `timeseries_metadata` so the cloud's alembic migrations can include it.
One row per point, keyed like InfluxDB keys a point (measurement, series = the sorted tag
set, timestamp), and written with an upsert: rewriting a point replaces its fields, which
keeps the spool-first redelivery idempotent here too. (InfluxDB merges the fields of two
writes of one point; here the last write's fields win. Our points always carry the same
fields for the same key, so the two agree.)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, MetaData, String, Table
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.state.db import writing
from cloud.timeseries.lineprotocol import LineProtocolError, Point, parse
from cloud.timeseries.sinks import SinkRejected, SinkUnavailable

timeseries_metadata = MetaData()

history_table = Table(
    "history",
    timeseries_metadata,
    Column("measurement", String(64), primary_key=True),
    Column("series", String(512), primary_key=True, doc="sorted tag set, k=v joined by ','"),
    Column("time_ns", BigInteger, primary_key=True, autoincrement=False),
    Column("store", String(64), nullable=True, doc="the store tag, for indexed reads"),
    Column("tags", JSON, nullable=False),
    Column("fields", JSON, nullable=False),
    Index("ix_history_measurement_store_time", "measurement", "store", "time_ns"),
)


def series_key(tags: dict[str, str]) -> str:
    return ",".join(f"{key}={tags[key]}" for key in sorted(tags))


def _row(point: Point) -> dict[str, Any]:
    return {
        "measurement": point.measurement,
        "series": series_key(point.tags),
        "time_ns": point.time_ns,
        "store": point.tags.get("store"),
        "tags": point.tags,
        "fields": point.fields,
    }


async def create_all(engine: AsyncEngine) -> None:
    """Create the history table (tests and the demo; production uses migrations)."""
    async with writing(engine) as connection:
        await connection.run_sync(timeseries_metadata.create_all)


class SqlSink:
    """Upserts points into `history` through an async SQLAlchemy engine (SQLite, PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        dialect = engine.dialect.name
        if dialect not in {"sqlite", "postgresql"}:
            raise ValueError(f"history upsert supports sqlite and postgresql, not {dialect}")
        self._engine = engine
        self._dialect = dialect

    async def write(self, lines: list[str]) -> None:
        rows: dict[tuple[str, str, int], dict[str, Any]] = {}
        for line in lines:
            try:
                row = _row(parse(line))
            except LineProtocolError as exc:
                raise SinkRejected(f"history table: {exc}") from None
            # One statement may not touch a row twice (PostgreSQL): the last write wins.
            rows[(row["measurement"], row["series"], row["time_ns"])] = row
        if not rows:
            return
        if self._dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            pg_statement = pg_insert(history_table)
            statement: Any = pg_statement.on_conflict_do_update(
                index_elements=["measurement", "series", "time_ns"],
                set_={"fields": pg_statement.excluded.fields},
            )
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            lite_statement = sqlite_insert(history_table)
            statement = lite_statement.on_conflict_do_update(
                index_elements=["measurement", "series", "time_ns"],
                set_={"fields": lite_statement.excluded.fields},
            )
        try:
            async with writing(self._engine) as connection:
                await connection.execute(statement, list(rows.values()))
        except (SQLAlchemyError, OSError) as exc:
            raise SinkUnavailable(f"history table: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        """The engine belongs to the caller; nothing to release here."""
