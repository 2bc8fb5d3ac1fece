"""Prometheus metrics of the cloud, in a registry of its own (tests run several clouds)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.resyncs = Counter("storegate_resync_commands", "resync commands sent", registry=r)
        self.gaps_given_up = Counter(
            "storegate_gaps_given_up", "gaps abandoned after the dedup window filled", registry=r
        )
        self.sse_dropped = Gauge(
            "storegate_sse_dropped", "live changes dropped for slow SSE clients", registry=r
        )
