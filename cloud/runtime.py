"""The running cloud: state store, ingestor and API wired together in one asyncio loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.api.app import create_app
from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.context import CloudContext
from cloud.domains import DomainContext, load_domains
from cloud.ingest.apply import BatchOutcome, StateApplier
from cloud.ingest.consumer import Consumer
from cloud.ingest.history import History, SpoolHistory
from cloud.ingest.registry import Registry
from cloud.ingest.sharded import ShardedIngest
from cloud.metrics import CloudMetrics
from cloud.state.db import create_engine, migrate, sqlite_path
from cloud.state.retention import RetentionPolicy, RetentionTask
from cloud.timeseries import LineSink, Pump, Spool
from cloud.timeseries.stock import StockRecorder
from cloud.timeseries.wiring import influx_config, open_sink

log = logging.getLogger(__name__)


def history_sink(settings: CloudSettings, engine: AsyncEngine) -> LineSink:
    """Where the pump writes history: InfluxDB when configured, else the SQL `history` table."""
    influx = settings.influxdb
    return open_sink(None if influx is None else influx_config(influx), engine)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the cloud owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class CloudRuntime:
    def __init__(self, settings: CloudSettings, *, history: History | None = None) -> None:
        self.settings = settings
        sqlite_file = sqlite_path(settings.database_url)
        if sqlite_file is not None:
            sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        self.engine = create_engine(settings.database_url)
        self.metrics = CloudMetrics()
        self.bus = LiveBus(settings.api.sse_queue_size)
        self.registry = Registry()
        self.spool: Spool | None = None
        self.pump: Pump | None = None
        self.stock_levels: StockRecorder | None = None
        if history is None:
            settings.spool_dir.mkdir(parents=True, exist_ok=True)
            self.spool = Spool(
                settings.spool_dir / "spool.db",
                capacity_bytes=settings.ingest.spool_capacity_bytes,
                keep_sent_s=settings.ingest.spool_replay_window_s,
                keep_sent_bytes=settings.ingest.spool_replay_bytes,
            )
            self.pump = Pump(self.spool, history_sink(settings, self.engine))
            self.metrics.watch_history(self.pump)
            self.stock_levels = StockRecorder(
                self.spool,
                self.engine,
                snapshot_interval_s=settings.history.stock_snapshot_interval_s,
                page_rows=settings.history.stock_snapshot_page_rows,
                queue_points=settings.history.stock_queue_points,
                on_spooled=self.pump.notify,
            )
            self.metrics.watch_stock_levels(self.stock_levels)
            history = SpoolHistory(self.spool)
        self.history = history
        self.domains = load_domains(settings)
        self.applier = StateApplier(
            self.engine,
            self.registry,
            self.history,
            self.metrics,
            settings.ingest,
            domains=self.domains,
        )
        self.consumer = Consumer(
            settings, self.applier, self.metrics, self.bus, on_batch=self._after_batch
        )
        # More than one shard: sessions per shard, leased (cloud/ingest/sharded.py); the
        # single `consumer` above then never connects.
        self.sharded: ShardedIngest | None = None
        if settings.ingest.shards > 1:
            self.sharded = ShardedIngest(
                settings,
                self.engine,
                self.registry,
                self.history,
                self.metrics,
                self.bus,
                domains=self.domains,
                on_batch=self._after_batch,
            )
        self.context = CloudContext(
            settings,
            self.engine,
            self.registry,
            self.bus,
            self.metrics,
            self.consumer.connected.is_set if self.sharded is None else self.sharded.connected,
            history_problems=None if self.pump is None else self.pump.problems,
        )
        self.app: FastAPI = create_app(
            self.context, routers=[r for d in self.domains if (r := d.router()) is not None]
        )
        retention = settings.retention
        self.retention = RetentionTask(
            self.engine,
            RetentionPolicy(
                retention.dead_letters_days, retention.history_days, retention.batch_rows
            ),
            retention.interval_s,
            on_expired=lambda table, rows: self.metrics.rows_expired.labels(table).inc(rows),
        )
        self._worker: asyncio.Task[None] | None = None
        self._server: _Server | None = None
        self._server_task: asyncio.Task[None] | None = None

    async def start(self, *, serve_api: bool = True) -> None:
        await migrate(self.engine)
        await self.registry.seed(self.engine, self.settings.stores)
        domain_context = DomainContext(
            self.settings, self.engine, self.bus, self.metrics, self._publish
        )
        for domain in self.domains:
            await domain.start(domain_context)
        if self.pump is not None:
            self.pump.start()
        if self.stock_levels is not None:
            self.stock_levels.start()
        self.retention.start()
        if self.sharded is not None:
            await self.sharded.start()
        else:
            self.consumer.start()
            self._worker = asyncio.create_task(self.consumer.run(), name="ingest-worker")
        if serve_api:
            api = self.settings.api
            config = uvicorn.Config(
                self.app, host=api.host, port=api.port, log_level="warning", lifespan="off"
            )
            self._server = _Server(config)
            self._server_task = asyncio.create_task(self._server.serve(), name="api")
            while not self._server.started:
                if self._server_task.done():
                    self._server_task.result()  # raises why it could not start
                    raise RuntimeError(f"API could not listen on {api.host}:{api.port}")
                await asyncio.sleep(0.02)

    def _publish(self, topic: str, payload: bytes) -> None:
        if self.sharded is not None:
            self.sharded.publish(topic, payload)
            return
        # paho's publish is thread-safe and queues while disconnected (QoS 1).
        self.consumer.client.publish(topic, payload, qos=1)

    def _after_batch(self, outcome: BatchOutcome) -> None:
        if self.stock_levels is not None and outcome.stock_levels:
            self.stock_levels.record(outcome.stock_levels)  # queued: never blocks ingest
        if self.pump is not None:
            self.pump.notify()

    @property
    def api_port(self) -> int:
        """The bound port (useful with `api.port: 0`)."""
        assert self._server is not None
        assert self._server.servers
        sockets = self._server.servers[0].sockets
        return int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop consuming, finish and ack the batch in progress, disconnect, close."""
        self.consumer.stop()
        await self.retention.stop()
        if self._worker is not None:
            await self._worker
        if self.sharded is not None:
            await self.sharded.stop()
        for domain in reversed(self.domains):
            await domain.stop()
        if self._worker is not None:
            await self.consumer.close()
        if self.stock_levels is not None:
            await self.stock_levels.stop()  # the queued changes into the spool
        if self.pump is not None:
            await self.pump.stop()  # flushes what it can; the rest waits on disk
            await self.pump.sink.close()
        if self.spool is not None:
            self.spool.close()
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            await self._server_task
        await self.engine.dispose()
