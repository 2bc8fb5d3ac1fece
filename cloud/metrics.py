"""Prometheus metrics of the cloud, in a registry of its own (tests run several clouds)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from cloud.timeseries import Pump
    from cloud.timeseries.stock import StockRecorder

PUMP_ERROR_KINDS = ("unavailable", "rejected", "probe")
REPLAY_REASONS = ("outage", "sink_restarted", "pump_start")


class CloudMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ingested = Counter(
            "storegate_messages_ingested", "messages applied", ["type"], registry=r
        )
        self.dead_lettered = Counter(
            "storegate_messages_dead_lettered", "messages rejected", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "storegate_messages_duplicate", "redeliveries recognised and skipped", registry=r
        )
        self.ignored = Counter(
            "storegate_messages_ignored", "messages not for the ingestor", ["why"], registry=r
        )
        self.acks = Counter("storegate_mqtt_acks", "MQTT PUBACKs sent after commit", registry=r)
        self.batch_seconds = Histogram(
            "storegate_ingest_batch_seconds",
            "time to apply and commit one batch",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.batch_failures = Counter(
            "storegate_ingest_batch_failures", "batches retried", ["why"], registry=r
        )
        self.queue_depth = Gauge(
            "storegate_ingest_queue_depth", "messages waiting for the worker", registry=r
        )
        self.shed = Counter(
            "storegate_ingest_shed",
            "messages acked unapplied: their store held over twice its share of a full queue",
            registry=r,
        )
        self.rows_expired = Counter(
            "storegate_rows_expired",
            "rows deleted by the retention policy (retention: in the cloud config)",
            ["table"],
            registry=r,
        )
        self.resyncs = Counter("storegate_resync_commands", "resync commands sent", registry=r)
        self.gaps_given_up = Counter(
            "storegate_gaps_given_up", "gaps abandoned after the dedup window filled", registry=r
        )
        self.shards_held = Gauge(
            "storegate_ingest_shards_held", "store shards this replica consumes", registry=r
        )
        self.shard_leases_lost = Counter(
            "storegate_ingest_shard_leases_lost",
            "shards stopped without a hand-over: taken over, fenced, or not renewed in time",
            registry=r,
        )
        self.sse_dropped = Gauge(
            "storegate_sse_dropped", "live changes dropped for slow SSE clients", registry=r
        )

    def watch_history(self, pump: Pump) -> None:
        """Publish the time-series spool and pump (read at each scrape)."""
        self.registry.register(HistoryCollector(pump))

    def watch_stock_levels(self, recorder: StockRecorder) -> None:
        """Publish the stock-level recorder's queue and snapshots (read at each scrape)."""
        self.registry.register(StockLevelCollector(recorder))


class HistoryCollector(Collector):
    """`storegate_history_*`: spool depth, lag, replay window, pump errors, replays, sink up.

    Read from the spool and the pump when scraped (the spool part is a small SQLite read:
    the `/metrics` route scrapes in a worker thread)."""

    def __init__(self, pump: Pump) -> None:
        self.pump = pump

    def collect(self) -> Iterable[Metric]:
        spool = self.pump.spool.stats()
        pump = self.pump.stats()
        lines = GaugeMetricFamily(
            "storegate_history_spool_lines",
            "time-series lines in the spool: pending (not yet acknowledged by the sink) and "
            "kept (acknowledged, kept to replay after a sink crash)",
            labels=["state"],
        )
        lines.add_metric(["pending"], spool.lines)
        lines.add_metric(["kept"], spool.kept_lines)
        size = GaugeMetricFamily(
            "storegate_history_spool_bytes", "line bytes in the spool", labels=["state"]
        )
        size.add_metric(["pending"], spool.bytes)
        size.add_metric(["kept"], spool.kept_bytes)
        yield lines
        yield size
        yield GaugeMetricFamily(
            "storegate_history_spool_capacity_bytes",
            "pending bytes at which the ingestor stops acking",
            value=spool.capacity_bytes,
        )
        yield GaugeMetricFamily(
            "storegate_history_spool_oldest_pending_age_seconds",
            "age of the oldest line not yet acknowledged by the sink (0 when none)",
            value=spool.oldest_age_s or 0.0,
        )
        yield GaugeMetricFamily(
            "storegate_history_replay_window_seconds",
            "how far back (by acknowledgement time) the kept lines reach",
            value=spool.kept_window_s or 0.0,
        )
        yield GaugeMetricFamily(
            "storegate_history_spool_dead_letters",
            "lines the sink refused for good, kept in the spool's dead_letter table",
            value=spool.dead_letters,
        )
        yield GaugeMetricFamily(
            "storegate_history_sink_up",
            "1 when the last contact with the time-series sink succeeded",
            value=1.0 if pump.sink_up else 0.0,
        )
        errors = CounterMetricFamily(
            "storegate_history_pump_errors",
            "pump errors: unavailable (a write failed), rejected (lines refused), probe",
            labels=["kind"],
        )
        for kind in sorted({*PUMP_ERROR_KINDS, *pump.errors}):
            errors.add_metric([kind], pump.errors.get(kind, 0))
        yield errors
        replays = CounterMetricFamily(
            "storegate_history_replays",
            "acknowledged windows written again because the sink may have lost them",
            labels=["reason"],
        )
        for reason in sorted({*REPLAY_REASONS, *pump.replays}):
            replays.add_metric([reason], pump.replays.get(reason, 0))
        yield replays
        yield CounterMetricFamily(
            "storegate_history_replayed_lines",
            "lines written again by replays",
            value=pump.replayed_lines,
        )
        yield CounterMetricFamily(
            "storegate_history_written_lines",
            "lines the sink acknowledged (replays not counted)",
            value=pump.written_lines,
        )


class StockLevelCollector(Collector):
    """`storegate_history_stock_*`: the stock-level changes and snapshots (stock.py)."""

    def __init__(self, recorder: StockRecorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterable[Metric]:
        stats = self.recorder.stats()
        yield GaugeMetricFamily(
            "storegate_history_stock_queue_points",
            "committed stock-level changes waiting for the time-series spool",
            value=stats.queued,
        )
        changes = CounterMetricFamily(
            "storegate_history_stock_changes",
            "committed stock-level changes: spooled, coalesced (the queue was full: replaced"
            " the queued change of the same shelf and GTIN), dropped (queue full)",
            labels=["outcome"],
        )
        changes.add_metric(["spooled"], stats.spooled)
        changes.add_metric(["coalesced"], stats.coalesced)
        changes.add_metric(["dropped"], stats.dropped)
        yield changes
        yield CounterMetricFamily(
            "storegate_history_stock_snapshots",
            "complete stock-level snapshots (every inventory row written again)",
            value=stats.snapshots,
        )
        yield CounterMetricFamily(
            "storegate_history_stock_snapshot_failures",
            "snapshots that stopped part-way (database down, spool full for an interval)",
            value=stats.snapshot_failures,
        )
        yield GaugeMetricFamily(
            "storegate_history_stock_last_snapshot_timestamp_seconds",
            "when the last complete snapshot ended (0: none yet)",
            value=stats.last_snapshot_at or 0.0,
        )
