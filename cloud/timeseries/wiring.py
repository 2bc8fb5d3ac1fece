"""Pick the sink the configuration asks for: InfluxDB (or VictoriaMetrics), else SQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.timeseries.pump import Pump, PumpConfig
from cloud.timeseries.sinks import InfluxConfig, InfluxSink, InfluxV1Sink, LineSink
from cloud.timeseries.spool import Spool
from cloud.timeseries.sql import SqlSink

if TYPE_CHECKING:  # cloud.config imports cloud.timeseries.config: no cycle at run time
    from cloud.config import InfluxSettings


def influx_config(settings: InfluxSettings) -> InfluxConfig:
    """The connection the cloud config's `influxdb` section describes."""
    token = settings.token.get_secret_value() if settings.token else ""
    return InfluxConfig(
        url=settings.url, bucket=settings.bucket, org=settings.org, token=token, api=settings.api
    )


def open_sink(influx: InfluxConfig | None, engine: AsyncEngine | None) -> LineSink:
    """An InfluxDB writer when InfluxDB is configured (`/write` for `api="v1"`, else
    `/api/v2/write`); the SQL `history` table otherwise."""
    if influx is not None:
        return InfluxV1Sink(influx) if influx.api == "v1" else InfluxSink(influx)
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
