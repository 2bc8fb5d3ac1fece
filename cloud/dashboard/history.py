"""Stock over time for the dashboard's chart, from whichever history store the cloud uses:
the cloud's committed levels (`stock_level`, cloud/timeseries/stock.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.config import CloudSettings
from cloud.timeseries.reader import (
    DEFAULT_LEVEL_LOOKBACK,
    HistoryReader,
    InfluxQLReader,
    SqlHistoryReader,
)
from cloud.timeseries.wiring import influx_config


def open_reader(settings: CloudSettings, engine: AsyncEngine) -> HistoryReader:
    """InfluxQL when InfluxDB is configured (the pump writes there), else the SQL table.

    A chart's first interval starts with the level before it: looked for two snapshot
    intervals back (one snapshot may have been late), a day when snapshots are off."""
    interval_s = settings.history.stock_snapshot_interval_s
    lookback = timedelta(seconds=2 * interval_s) if interval_s > 0 else DEFAULT_LEVEL_LOOKBACK
    influx = settings.influxdb
    if influx is None:
        return SqlHistoryReader(engine, level_lookback=lookback)
    return InfluxQLReader.for_config(influx_config(influx), level_lookback=lookback)


@dataclass(frozen=True, slots=True)
class StockSeries:
    """Per-interval stock of one GTIN: the total over shelves, and each shelf."""

    times: list[datetime]
    total: list[int | None]
    shelves: dict[str, list[int | None]]


async def stock_over_time(
    reader: HistoryReader,
    store: str,
    gtin: str,
    end: datetime,
    span: timedelta,
    points: int,
) -> StockSeries:
    every = span / points
    start = end - span
    samples = await reader.stock_level_history(store, gtin, start, end, every)
    times = sorted({sample.time for sample in samples})
    index = {stamp: i for i, stamp in enumerate(times)}
    shelves: dict[str, list[int | None]] = {}
    for sample in samples:
        shelves.setdefault(sample.shelf, [None] * len(times))[index[sample.time]] = sample.count
    total: list[int | None] = []
    for i in range(len(times)):
        known = [counts[i] for counts in shelves.values() if counts[i] is not None]
        total.append(sum(c for c in known if c is not None) if known else None)
    return StockSeries(times, total, shelves)
