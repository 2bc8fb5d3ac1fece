"""The MQTT side of the ingestor: paho's network loop inside our asyncio loop, batches, acks.

paho runs without a thread of its own (its external-loop API: the socket callbacks below
put its socket on our selector). One thread does everything from the socket to the ack, so
a message is never handed between threads: no queue locks, no GIL hand-offs, no wake-up
writes. A thread for paho cost about a tenth of the ingest core in those hand-offs alone.
Only the TCP connect runs in an executor, so a slow broker address never blocks the loop.
The client is `IngestClient` (cloud/ingest/mqtt_client.py): paho with a leaner receive path
for a flood of PUBLISHes.

Backpressure policy: at most `ingest.queue_size` messages are un-acked here (waiting for a
batch, or in the batch being committed). At that bound the ingestor stops reading its
socket, so it sends no acks and the broker holds further messages for us, in the persistent
session's queue (MQTT 5: we also announce the bound as our Receive Maximum). Memory
stays bounded, nothing is dropped. A batch that cannot commit (database down, spool full)
is retried with backoff, still un-acked, which keeps the bound reached and the broker
holding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.bus import LiveBus
from cloud.config import CloudSettings
from cloud.ingest.apply import BatchOutcome, Incoming, InfrastructureError, StateApplier
from cloud.ingest.commits import CommitMarks
from cloud.ingest.fairness import FairQueue, store_of
from cloud.ingest.leases import FencedError
from cloud.ingest.mqtt_client import IngestClient
from cloud.metrics import CloudMetrics
from protocols.codec import encode, topic_for
from protocols.mqtt import MqttSettings, new_client
from protocols.topics import node_filter

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 7 * 86400
RETRY_MIN_S, RETRY_MAX_S = 0.2, 10.0
# Packets read per readiness event at most, so a flooded socket cannot starve the batch
# worker or the API of the loop; the selector calls again at once while data is waiting.
READS_PER_WAKEUP = 64
MISC_INTERVAL_S = 1.0  # keepalive pings and their timeout (paho's loop_misc)
CLOSE_TIMEOUT_S = 2.0
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code of the DISCONNECT a broker sends on takeover


@contextlib.contextmanager
def _corked(sock: Any) -> Iterator[None]:
    """Hold partial TCP segments while writing a burst (Linux TCP_CORK; elsewhere a no-op)."""
    cork = getattr(socket, "TCP_CORK", None)
    if cork is None or not isinstance(sock, socket.socket) or sock.family == socket.AF_UNIX:
        yield
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, cork, 1)
    except OSError:
        yield  # closing under us: paho reports the loss
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, cork, 0)  # pushes what is held, at once


class ShardSession(Protocol):
    """What a shard's consumer asks of the replica that leases the shard."""

    mqtt: MqttSettings  # with the shard's client id and login

    def filters(self) -> list[str]:
        """The topic filters of the shard's stores, now."""
        ...

    def may_connect(self) -> bool:
        """False once the lease is not surely ours: the session must stay closed."""
        ...


class Consumer:
    def __init__(
        self,
        settings: CloudSettings,
        applier: StateApplier,
        metrics: CloudMetrics,
        bus: LiveBus,
        *,
        on_batch: Callable[[BatchOutcome], None] | None = None,
        session: ShardSession | None = None,
        apply_lock: asyncio.Lock | None = None,
    ) -> None:
        self.settings = settings
        self.ingest = settings.ingest
        # One shard's session (cloud/ingest/sharded.py), or None: the one session on everything.
        self.session = session
        self.mqtt = settings.mqtt if session is None else session.mqtt
        # Batches of one process commit one at a time: domains keep per-batch state.
        self._apply_lock = apply_lock or asyncio.Lock()
        self.fenced = False  # the lease was lost: this session must never connect again
        self.applier = applier
        self.metrics = metrics
        self.bus = bus
        self.on_batch = on_batch
        self.connected = threading.Event()  # a threading.Event: readiness probes may block on it
        self._stopping = threading.Event()
        # Received, not yet in a batch; fair between stores (cloud/ingest/fairness.py).
        # From half the un-acked bound on, a store holding twice its share is shed, so a
        # flood is cut before reading stops (at the bound), which would make every store
        # wait in the broker's queue behind it.
        self._pending: FairQueue[Incoming] = FairQueue(max(1, self.ingest.queue_size // 2))
        self._in_batch = 0  # taken into the batch being applied, not yet acked
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._arrived: asyncio.Event | None = None
        self._socket_closed: asyncio.Event | None = None
        self._sock: Any = None  # the socket on our selector, and its descriptor
        self._fd = -1
        self._reading = False
        self._writing = False
        self._paused = False  # stopped reading: the un-acked bound is reached
        self._received = 0
        self._reconnect_delay = self.mqtt.reconnect_min_s
        self._keeper: asyncio.Task[None] | None = None
        # Bumped on every disconnect. After a reconnect the broker redelivers what we had
        # not acked, and packet ids get reused, so a late ack for a message of an older
        # connection could acknowledge a different message: it is skipped instead (the
        # redelivered copy is deduplicated and acked on its own).
        self._generation = 0
        self.acked_total = 0  # for benchmarks and tests: messages acknowledged after commit
        self.marks = CommitMarks()  # committed positions, published to the edges
        self.marks_published = 0
        self._marks_task: asyncio.Task[None] | None = None
        self.first_message_at: float | None = None  # perf_counter of the first delivery
        self.client: IngestClient = self._make_client()

    # ------------------------------------------------------------------ paho callbacks

    def _make_client(self) -> IngestClient:
        client = new_client(self.mqtt, self.ingest.client_id, client_class=IngestClient)
        assert isinstance(client, IngestClient)
        client.manual_ack_set(True)  # PUBACK only after our commit
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.deliver = self._deliver  # PUBLISHes without properties: the fast path
        client.on_message = self._on_message  # the others
        socket_options = client.on_socket_open  # TCP_NODELAY from new_client

        def on_socket_open(client: paho.Client, userdata: Any, sock: Any) -> None:
            if socket_options is not None:
                socket_options(client, userdata, sock)
            self._in_loop(self._watch, sock)

        client.on_socket_open = on_socket_open
        client.on_socket_close = lambda _c, _u, sock: self._in_loop(self._unwatch, sock)
        client.on_socket_register_write = lambda _c, _u, sock: self._in_loop(self._want_write, sock)
        client.on_socket_unregister_write = lambda _c, _u, sock: self._in_loop(self._no_write, sock)
        return client

    def _on_connect(
        self, client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        self._reconnect_delay = self.mqtt.reconnect_min_s
        if self.session is None:
            filters = [node_filter(shared_group=self.ingest.shared_group)]
        else:
            filters = self.session.filters()
        self._subscribe(filters)
        self.marks.resend_all()
        log.info(
            "connected to %s as %s, subscribed to %s",
            self.mqtt.describe(),
            self.client_id,
            filters[0] if len(filters) == 1 else f"{len(filters)} filters",
        )
        self.connected.set()

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or self.ingest.client_id

    def _subscribe(self, filters: list[str]) -> None:
        if not filters:
            return
        if self.mqtt.protocol == "5" and not self.ingest.shared_group:
            # No Local: our own commit marks and commands do not come back to us. (MQTT 5
            # forbids it on shared subscriptions; there apply.py ignores them.)
            options = SubscribeOptions(qos=1, noLocal=True)
            self.client.subscribe([(f, options) for f in filters])
        else:
            self.client.subscribe([(f, 1) for f in filters])

    def subscribe_more(self, filters: list[str]) -> None:
        """Add filters while connected (a new store of this shard); a reconnect subscribes
        to all of `session.filters()` anyway."""
        if self.connected.is_set():
            self._subscribe(filters)
            self.client.loop_write()

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason: Any, *_: Any
    ) -> None:
        self._generation += 1
        self.connected.clear()
        if self.session is not None and getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            # Another replica connected with this shard's client id: it holds the lease
            # now. Connecting again would take the session back, and so on, in turns.
            # (Brokers that say so, as EMQX does; Mosquitto 2.0 just closes the connection,
            # and the lease clock, `session.may_connect()`, keeps the session closed.)
            log.error("%s: session taken over by another connection; giving it up", self.client_id)
            self.fence_off()
            return
        if not self._stopping.is_set():
            log.warning("lost the broker; reconnecting, unacked messages come again")

    def fence_off(self) -> None:
        """The lease is gone: stop at once, commit nothing more, never connect again."""
        self.fenced = True
        self.stop()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # MQTT requires UTF-8 topics; keep it for the record
        self._deliver(topic, bytes(message.payload), message.mid, message.qos)

    def _deliver(self, topic: str, payload: bytes, mid: int, qos: int) -> None:
        self._received += 1
        if self.first_message_at is None:
            self.first_message_at = time.perf_counter()
        if self._stopping.is_set():
            return  # not acked: the broker keeps it in our session for the next start
        if not self._pending.push(
            store_of(topic), Incoming(topic, payload, mid, qos, self._generation)
        ):
            # Shed: its store floods a full queue. Acked now so the broker's queue keeps
            # moving for every other store; the edge sends it again until committed.
            if qos > 0:
                self.client.ack(mid, qos)
            self.metrics.shed.inc()
            return
        if len(self._pending) + self._in_batch >= self.ingest.queue_size:
            self._pause()
        if self._arrived is not None:
            self._arrived.set()

    # ------------------------------------------------------------------ the socket

    def _in_loop(self, action: Callable[[Any], None], sock: Any) -> None:
        # paho calls the socket callbacks from whichever thread drives it: ours, or the
        # executor thread that connects.
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            action(sock)
        else:
            self._loop.call_soon_threadsafe(action, sock)

    def _watch(self, sock: Any) -> None:
        current = self.client.socket()
        if current is None or current is not sock or self._loop is None:
            return  # closed or replaced before we got to it
        self._sock = current
        self._fd = current.fileno()
        self._reading = self._writing = False
        if not self._paused:
            self._start_reading()

    def _unwatch(self, sock: Any) -> None:
        if sock is not self._sock or self._loop is None:
            return
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._sock, self._fd = None, -1
        self._reading = self._writing = False
        if self._socket_closed is not None:
            self._socket_closed.set()

    def _want_write(self, sock: Any) -> None:
        if sock is self._sock and not self._writing and self._loop is not None:
            self._loop.add_writer(self._fd, self._writable)
            self._writing = True

    def _no_write(self, sock: Any) -> None:
        if sock is self._sock and self._writing and self._loop is not None:
            self._loop.remove_writer(self._fd)
            self._writing = False

    def _writable(self) -> None:
        self.client.loop_write()

    def _readable(self) -> None:
        client = self.client
        for _ in range(READS_PER_WAKEUP):
            before = self._received
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is None:
                return  # connection lost: paho closed the socket and said so in on_disconnect
            if self._received == before or self._paused:
                break  # nothing more waiting (or not a message: the selector calls again)
        self._read_buffered_soon()

    def _read_buffered_soon(self) -> None:
        # Bytes read ahead of paho (or held by TLS) do not make the socket readable again:
        # come back for them by ourselves.
        if (
            not self._paused
            and self._sock is not None
            and self._loop is not None
            and self.client.has_buffered_input()
        ):
            self._loop.call_soon(self._readable)

    def _start_reading(self) -> None:
        if self._sock is not None and not self._reading and self._loop is not None:
            self._loop.add_reader(self._fd, self._readable)
            self._reading = True

    def _pause(self) -> None:
        self._paused = True
        if self._reading and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._reading = False

    def _resume(self) -> None:
        self._paused = False
        self._start_reading()
        self._read_buffered_soon()

    def _next_reconnect_delay(self) -> float:
        """The delay before this attempt; doubles up to the maximum until a CONNACK."""
        delay = self._reconnect_delay
        self._reconnect_delay = min(delay * 2, self.mqtt.reconnect_max_s)
        return delay

    async def _keep_connected(self) -> None:
        """Connect, reconnect with backoff after a loss, and drive keepalive."""
        assert self._loop is not None
        assert self._socket_closed is not None
        mqtt = self.mqtt
        while not self._stopping.is_set():
            if self._sock is None:
                if self.session is not None and not self.session.may_connect():
                    log.error("%s: lease not valid any more; not connecting", self.client_id)
                    self.fence_off()
                    return
                self._socket_closed.clear()
                try:
                    await self._loop.run_in_executor(None, self.client.reconnect)
                except (OSError, ValueError) as exc:
                    delay = self._next_reconnect_delay()
                    log.warning(
                        "cannot reach the broker at %s: %s; retrying in %.1fs",
                        mqtt.describe(),
                        exc,
                        delay,
                    )
                    await asyncio.sleep(delay)
                    continue
            else:
                self.client.loop_misc()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(MISC_INTERVAL_S):
                    await self._socket_closed.wait()
            if self._sock is None and not self._stopping.is_set():
                # Lost (or refused): back off before the next attempt; a CONNACK resets it.
                await asyncio.sleep(self._next_reconnect_delay())

    def start(self) -> None:
        """Set the connection up (persistent session, Receive Maximum = the un-acked bound);
        `run()` connects and keeps connecting."""
        mqtt = self.mqtt
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

    # ------------------------------------------------------------------ the worker

    async def run(self) -> None:
        """Take batches until `stop()`; each is committed, then its messages are acked."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._arrived = asyncio.Event()
        self._socket_closed = asyncio.Event()
        self._keeper = asyncio.create_task(self._keep_connected(), name="ingest-connection")
        self._marks_task = asyncio.create_task(self._publish_marks(), name="commit-marks")
        while not self._stopping.is_set():
            batch = await self._next_batch()
            if batch:
                await self._process(batch)

    async def _next_batch(self) -> list[Incoming]:
        arrived = self._arrived
        assert arrived is not None
        pending = self._pending
        while not pending and not self._stopping.is_set():
            arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.25):  # wake up now and then to notice stop()
                    await arrived.wait()
        limit = self.ingest.batch_max
        if self.ingest.batch_wait_ms > 0 and pending and len(pending) < limit:
            # Give a batch a moment to fill, to spread the commit over more messages.
            deadline = time.monotonic() + self.ingest.batch_wait_ms / 1000
            while len(pending) < limit and not self._stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await arrived.wait()
        if self._stopping.is_set():
            return []
        batch = pending.take(limit)
        pending.report()
        self._in_batch = len(batch)
        self.metrics.queue_depth.set(len(pending))
        return batch

    async def _process(self, batch: list[Incoming]) -> None:
        delay = RETRY_MIN_S
        while True:
            started = time.perf_counter()
            try:
                async with self._apply_lock:
                    if self._stopping.is_set() and self.fenced:
                        raise FencedError(f"{self.client_id}: lease lost before the commit")
                    outcome = await self.applier.apply(batch)
                break
            except FencedError as exc:
                # Not ours any more: the new holder gets these messages again from the broker.
                log.error("%s: %s; %d messages left unacked", self.client_id, exc, len(batch))
                self.metrics.batch_failures.labels("fenced").inc()
                self.fence_off()
                self._in_batch = self._pending.in_flight = 0
                return
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
                self._in_batch = self._pending.in_flight = 0
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self._ack(batch)
        self.marks.note(outcome.committed)
        for command in outcome.commands:
            self.client.publish(topic_for(command), encode(command), qos=1)
            if command.name == "resync":
                self.metrics.resyncs.inc()
                log.info("asked %s/%s to resync: %s", command.store, command.node, command.args)
        for topic, payload in outcome.publishes:
            self.client.publish(topic, payload, qos=1)
        if self._sock is not None:
            # The acks and publishes go now, not on the next turn. paho sends each packet
            # on its own; corked, the kernel packs a batch's PUBACKs into full segments
            # instead of pushing one tiny segment per ack through the TCP stack.
            with _corked(self._sock):
                self.client.loop_write()
        for change in outcome.changes:
            self.bus.publish(change)
        self.metrics.sse_dropped.set(self.bus.dropped_total)
        if self.on_batch is not None:
            self.on_batch(outcome)

    def _ack(self, batch: list[Incoming]) -> None:
        generation = self._generation
        ack = self.client.ack
        for item in batch:
            if item.qos > 0 and item.generation == generation:
                ack(item.mid, item.qos)
        self.metrics.acks.inc(len(batch))
        self.acked_total += len(batch)
        self._in_batch = self._pending.in_flight = 0
        if self._paused and len(self._pending) < self.ingest.queue_size:
            self._resume()

    async def _publish_marks(self) -> None:
        """Every `commit_interval_ms`: one retained `committed` message per node with news."""
        interval = self.ingest.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.publish_marks()
            except Exception:  # a bug here must not stop the marks for good: edges resend
                log.exception("publishing the commit marks failed; retrying next interval")

    def publish_marks(self) -> None:
        # While disconnected the news waits here (not in paho's queue): the next publish
        # carries the latest marks, never a backlog of stale ones.
        if not self.marks.pending or not self.connected.is_set() or self.fenced:
            return  # fenced: the new holder's marks are the ones the edges must see
        for message in self.marks.take():
            self.client.publish(topic_for(message), encode(message), qos=1, retain=True)
            self.marks_published += 1

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> None:
        """Stop taking messages; the batch in progress still commits and acks (see close)."""
        self._stopping.set()
        if self._loop is not None and self._arrived is not None:
            self._loop.call_soon_threadsafe(self._arrived.set)

    async def close(self) -> None:
        """Disconnect; received but unprocessed messages were never acked, so they come again."""
        self._stopping.set()
        if self._pending:
            log.info("left %d unprocessed messages to the broker's session", len(self._pending))
            self._pending.clear()
        if self._marks_task is not None:
            self._marks_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._marks_task
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        if self._sock is not None and self._socket_closed is not None:
            self.publish_marks()  # what the last batches committed; goes out before DISCONNECT
            self._socket_closed.clear()
            self.client.disconnect()  # paho closes the socket once DISCONNECT is out
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await self._socket_closed.wait()
        if self._sock is not None:
            log.warning("broker did not take our DISCONNECT in time; closing the socket")
            sock = self._sock
            self._unwatch(sock)
            sock.close()
