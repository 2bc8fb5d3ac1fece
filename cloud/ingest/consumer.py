"""The MQTT side of the ingestor: paho thread -> bounded queue -> batch worker -> ack.

Backpressure policy: the queue between paho's network thread and the worker holds at most
`ingest.queue_size` messages. When it is full, paho's thread blocks in `put`, so it stops
reading the socket and sends no acks; the broker then holds further messages for us (up to
the Receive Maximum we announce, then in the persistent session's queue). Memory stays
bounded, nothing is dropped. A batch that cannot commit (database down, spool full) is
retried with backoff, still un-acked, which keeps the queue full and the broker holding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion  # noqa: F401  (documented dependency)
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.ingest.apply import BatchOutcome, Incoming, InfrastructureError, StateApplier
from cloud.metrics import CloudMetrics
from protocols.codec import encode, topic_for
from protocols.mqtt import new_client
from protocols.topics import node_filter

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400
RETRY_MIN_S, RETRY_MAX_S = 0.2, 10.0


class Consumer:
    def __init__(
        self,
        settings: CloudSettings,
        applier: StateApplier,
        metrics: CloudMetrics,
        bus: LiveBus,
        *,
        on_batch: Callable[[BatchOutcome], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ingest = settings.ingest
        self.applier = applier
        self.metrics = metrics
        self.bus = bus
        self.on_batch = on_batch
        self.queue: queue.Queue[Incoming] = queue.Queue(self.ingest.queue_size)
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker_waiting = False
        # Bumped on every disconnect. After a reconnect the broker redelivers what we had
        # not acked, and packet ids get reused, so a late ack for a message of an older
        # connection could acknowledge a different message: it is skipped instead (the
        # redelivered copy is deduplicated and acked on its own).
        self._generation = 0
        self.acked_total = 0  # for benchmarks and tests: messages acknowledged after commit
        self.first_message_at: float | None = None  # perf_counter of the first delivery
        self.client = self._make_client()

    # ------------------------------------------------------------------ paho thread

    def _make_client(self) -> paho.Client:
        client = new_client(self.settings.mqtt, self.ingest.client_id)
        client.manual_ack_set(True)  # PUBACK only after our commit
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        topic_filter = node_filter(shared_group=self.ingest.shared_group)
        client.subscribe(topic_filter, qos=1)
        log.info("connected to %s, subscribed to %s", self.settings.mqtt.describe(), topic_filter)
        self.connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._generation += 1
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("lost the broker; paho reconnects, unacked messages come again")

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        if self.first_message_at is None:
            self.first_message_at = time.perf_counter()
        if self._stopping.is_set():
            return  # not acked: the broker keeps it in our session for the next start
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # MQTT requires UTF-8 topics; keep it for the record
        item = Incoming(topic, bytes(message.payload), message.mid, message.qos, self._generation)
        while not self._stopping.is_set():
            try:
                self.queue.put(item, timeout=0.5)  # blocks when full: backpressure
                break
            except queue.Full:
                continue
        if self._worker_waiting and self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def start(self) -> None:
        """Connect (persistent session, Receive Maximum = our queue) and start paho's thread."""
        mqtt = self.settings.mqtt
        if mqtt.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = SESSION_EXPIRY_S
            properties.ReceiveMaximum = min(self.ingest.queue_size, 65535)
            self.client.connect_async(
                mqtt.host,
                mqtt.port,
                keepalive=mqtt.keepalive_s,
                clean_start=False,
                properties=properties,
            )
        else:
            self.client.connect_async(mqtt.host, mqtt.port, keepalive=mqtt.keepalive_s)
        self.client.loop_start()

    # ------------------------------------------------------------------ asyncio worker

    async def run(self) -> None:
        """Take batches until `stop()`; each is committed, then its messages are acked."""
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        while not self._stopping.is_set():
            batch = await self._next_batch()
            if batch:
                await self._process(batch)

    async def _next_batch(self) -> list[Incoming]:
        assert self._wakeup is not None
        batch: list[Incoming] = []
        deadline: float | None = None
        limit = self.ingest.batch_max
        while len(batch) < limit and not self._stopping.is_set():
            try:
                while len(batch) < limit:
                    batch.append(self.queue.get_nowait())
            except queue.Empty:
                pass
            if len(batch) >= limit:
                break
            now = time.monotonic()
            if batch:
                if deadline is None:
                    deadline = now + self.ingest.batch_wait_ms / 1000
                if now >= deadline:
                    break
                timeout = deadline - now
            else:
                timeout = 0.25  # idle: wake up now and then to notice stop()
            self._wakeup.clear()
            self._worker_waiting = True
            if self.queue.empty():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wakeup.wait()
            self._worker_waiting = False
            if not batch and self.queue.empty():
                return batch
        self.metrics.queue_depth.set(self.queue.qsize())
        return batch

    async def _process(self, batch: list[Incoming]) -> None:
        delay = RETRY_MIN_S
        while True:
            started = time.perf_counter()
            try:
                outcome = await self.applier.apply(batch)
                break
            except InfrastructureError as exc:
                # Nothing acked: the messages stay ours (and the broker's) until it works.
                log.warning(
                    "batch of %d not committed, retrying in %.1fs: %s", len(batch), delay, exc
                )
            except Exception:
                # A bug must not kill the worker silently; same policy: hold, retry, say why.
                log.exception("batch of %d failed, retrying in %.1fs", len(batch), delay)
            if self._stopping.is_set():
                log.warning(
                    "stopping with %d uncommitted messages; the broker keeps them", len(batch)
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        generation = self._generation
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                self.client.ack(item.mid, item.qos)
        self.metrics.acks.inc(len(batch))
        self.acked_total += len(batch)
        for command in outcome.commands:
            self.client.publish(topic_for(command), encode(command), qos=1)
            if command.name == "resync":
                self.metrics.resyncs.inc()
                log.info("asked %s/%s to resync: %s", command.store, command.node, command.args)
        for topic, payload in outcome.publishes:
            self.client.publish(topic, payload, qos=1)
        for change in outcome.changes:
            self.bus.publish(change)
        self.metrics.sse_dropped.set(self.bus.dropped_total)
        if self.on_batch is not None:
            self.on_batch(outcome)

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> None:
        """Stop taking messages; the batch in progress still commits and acks (see close)."""
        self._stopping.set()
        if self._loop is not None and self._wakeup is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    def close(self) -> None:
        """Disconnect; queued but unprocessed messages were never acked, so they come again."""
        self._stopping.set()
        dropped = 0
        while True:
            try:
                self.queue.get_nowait()
                dropped += 1
            except queue.Empty:
                break
        if dropped:
            log.info("left %d unprocessed messages to the broker's session", dropped)
        self.client.disconnect()
        self.client.loop_stop()
