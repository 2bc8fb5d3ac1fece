"""Stock over time for the dashboard's chart, from whichever history store the cloud uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.config import CloudSettings
from cloud.timeseries.reader import HistoryReader, InfluxQLReader, SqlHistoryReader


def open_reader(settings: CloudSettings, engine: AsyncEngine) -> HistoryReader:
    """InfluxQL when InfluxDB is configured (the pump writes there), else the SQL table."""
    influx = settings.influxdb
    if influx is None:
        return SqlHistoryReader(engine)
    token = influx.token.get_secret_value() if influx.token else None
    return InfluxQLReader(influx.url, influx.bucket, token=token)


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
    samples = await reader.shelf_count_history(store, gtin, start, end, every)
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
