"""Pick the sink the configuration asks for: InfluxDB (or VictoriaMetrics), else SQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.timeseries.pump import Pump, PumpConfig
from cloud.timeseries.sinks import InfluxConfig, InfluxSink, LineSink
from cloud.timeseries.spool import Spool
from cloud.timeseries.sql import SqlSink


def open_sink(influx: InfluxConfig | None, engine: AsyncEngine | None) -> LineSink:
    """`InfluxSink` when InfluxDB is configured; the SQL `history` table otherwise."""
    if influx is not None:
        return InfluxSink(influx)
    if engine is not None:
        return SqlSink(engine)
    raise ValueError("history needs an InfluxDB configuration or a database engine")


def open_pump(
    spool: Spool,
    *,
    influx: InfluxConfig | None = None,
    engine: AsyncEngine | None = None,
    config: PumpConfig | None = None,
) -> Pump:
    """A pump (not started) from `spool` to the configured sink."""
    return Pump(spool, open_sink(influx, engine), config)
