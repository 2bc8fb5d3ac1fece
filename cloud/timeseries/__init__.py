"""Time-series history: message -> points -> durable spool -> pump -> sink; and readers.

Use from the ingestor, per batch of decoded messages::

    spool.append(lines_for(messages))   # 1. durable (raises SpoolFull: stop acking)
    ...commit state...                  # 2.
    ...ack MQTT...                      # 3.
    pump.notify()

and run `open_pump(spool, influx=..., engine=...).start()` once (InfluxDB when configured, the
SQL `history` table otherwise); `await pump.stop()` on shutdown flushes. `Spool.append` also
takes `Point`s (as `points_for` returns them) and encodes them itself.
See docs/timeseries.md for the schema and its cardinality.
"""

from cloud.timeseries.lineprotocol import FieldValue, LineProtocolError, Point, encode, parse
from cloud.timeseries.pump import Pump, PumpConfig, PumpStats
from cloud.timeseries.reader import (
    HistoryReader,
    HistoryUnavailable,
    InfluxQLReader,
    QueryError,
    Series,
    ShelfCountSample,
    SqlHistoryReader,
    check_read_only,
    duration_literal,
    quote_ident,
    quote_literal,
)
from cloud.timeseries.schema import MEASUREMENTS, lines_for, message_lines, points_for, time_ns
from cloud.timeseries.sinks import (
    InfluxConfig,
    InfluxSink,
    LineSink,
    RestartProbe,
    SinkRejected,
    SinkUnavailable,
)
from cloud.timeseries.spool import Spool, SpooledBatch, SpoolFull, SpoolStats
from cloud.timeseries.sql import SqlSink, create_all, history_table, timeseries_metadata
from cloud.timeseries.wiring import open_pump, open_sink

__all__ = [
    "MEASUREMENTS",
    "FieldValue",
    "HistoryReader",
    "HistoryUnavailable",
    "InfluxConfig",
    "InfluxQLReader",
    "InfluxSink",
    "LineProtocolError",
    "LineSink",
    "Point",
    "Pump",
    "PumpConfig",
    "PumpStats",
    "QueryError",
    "RestartProbe",
    "Series",
    "ShelfCountSample",
    "SinkRejected",
    "SinkUnavailable",
    "Spool",
    "SpoolFull",
    "SpoolStats",
    "SpooledBatch",
    "SqlHistoryReader",
    "SqlSink",
    "check_read_only",
    "create_all",
    "duration_literal",
    "encode",
    "history_table",
    "lines_for",
    "message_lines",
    "open_pump",
    "open_sink",
    "parse",
    "points_for",
    "quote_ident",
    "quote_literal",
    "time_ns",
    "timeseries_metadata",
]
