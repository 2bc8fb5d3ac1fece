"""Apply one batch of MQTT messages to the state store in one transaction.

Order inside a batch, per message: topic check, known store/node check, decode, dedup on
(store, node, stream, seq), live-state update, time-series points. At the end of the batch
the points go to the history spool FIRST, then the transaction commits; only after that
does the consumer acknowledge the MQTT messages. A crash anywhere before the commit leaves
every message of the batch un-acked, so the broker redelivers it and dedup sees it fresh.

Caches (stream positions, node liveness) are updated on a copy during the batch and merged
only after the commit, so a rolled-back batch leaves them as they were. What is not cached
yet is read for all the batch's nodes at once (`prefetch`), and the core rows a batch
writes (inventory, positions, marks, node states, heartbeats) go in a statement per table
at its end: database round trips per batch, not per message.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.bus import Change
from cloud.config import IngestSettings
from cloud.domains import Domain, DomainTx
from cloud.ingest.faults import Fault, classify, describe
from cloud.ingest.history import History, HistoryFullError
from cloud.ingest.leases import FencedError
from cloud.ingest.registry import Registry
from cloud.ingest.sequencing import Admission, StreamPosition, admit, on_birth
from cloud.ingest.staging import PartError, SnapshotKey, SnapshotPart, SnapshotStaging
from cloud.ingest.unknown import UnknownSources
from cloud.metrics import CloudMetrics
from cloud.state import schema
from cloud.state.db import upsert, writing
from cloud.timeseries.stock import StockLevel
from protocols.codec import DecodeError, decode
from protocols.messages import (
    AckStatus,
    Birth,
    Command,
    CommandAck,
    Death,
    Health,
    Message,
    NodeState,
    RfidEvents,
    RfidSnapshot,
    Status,
    new_message_id,
    utc_now,
)
from protocols.topics import (
    LIFECYCLE_STREAMS,
    Channel,
    NodeTopic,
    ShopperTopic,
    TopicError,
    parse_topic,
)

log = logging.getLogger(__name__)

PAYLOAD_EXCERPT_BYTES = 1024
PREFETCH_STORES = 500  # stores per prefetch statement (an IN list of parameters)
# Streams whose gaps hurt live state and are worth a resync; a lost heartbeat is not.
RESYNC_CHANNELS = frozenset({Channel.RFID, Channel.LOCKER, Channel.BLE})
RESYNC = "resync"
FINAL_ACKS = tuple(status.value for status in AckStatus if status.final)
# What of a heartbeat the node row keeps (the rest is envelope).
HEALTH_FIELDS = {
    "uptime_s",
    "cpu_percent",
    "rss_bytes",
    "disk_free_bytes",
    "outbox",
    "drivers",
    "version",
}

StreamKey = tuple[str, str, str]
NodeKey = tuple[str, str]
# Run in a batch's transaction just before it commits; raises `FencedError` to refuse it.
Fence = Callable[[AsyncConnection], Awaitable[None]]


@dataclass(slots=True)
class Incoming:
    """One MQTT message as the paho thread handed it over."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int = 0  # which broker connection delivered it; acks go to that one only
    received_at: datetime = field(default_factory=utc_now)


@dataclass(slots=True)
class NodeLiveness:
    status: str
    bd_seq: int | None


@dataclass(slots=True)
class BatchOutcome:
    changes: list[Change] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    publishes: list[tuple[str, bytes]] = field(default_factory=list)
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    # (store, node, stream) -> hw after the commit, for every data stream the batch touched
    committed: dict[StreamKey, int] = field(default_factory=dict)
    # every (store, shelf, gtin) level the batch's messages set, in order, at the time of the
    # message; 0 for a row a snapshot or birth removed (cloud/timeseries/stock.py records them)
    stock_levels: list[StockLevel] = field(default_factory=list)


_LATE_PART = Admission(duplicate=False, live=True)


class InfrastructureError(Exception):
    """Storage or spool unavailable: retry the whole batch later, ack nothing."""


class _MessageError(Exception):
    """The batch failed while handling its message `index` (the cause says why)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"failed on message {index} of the batch")
        self.index = index


class StateApplier:
    def __init__(
        self,
        engine: AsyncEngine,
        registry: Registry,
        history: History,
        metrics: CloudMetrics,
        settings: IngestSettings,
        domains: Sequence[Domain] = (),
        *,
        fence: Fence | None = None,
    ) -> None:
        self.engine = engine
        self.fence = fence
        self.domains = tuple(domains)
        self.registry = registry
        self.history = history
        self.metrics = metrics
        self.settings = settings
        self._positions: dict[StreamKey, StreamPosition] = {}
        self._nodes: dict[NodeKey, NodeLiveness] = {}
        # Nodes whose committed stream positions and liveness were all read at once: a
        # stream of theirs not in `_positions` has no row (a new stream).
        self._loaded: set[NodeKey] = set()
        self.unknown_sources = UnknownSources()
        self.staging = SnapshotStaging(settings.snapshot_part_timeout_s)

    async def apply(self, batch: Sequence[Incoming]) -> BatchOutcome:
        """Apply and commit `batch`; raises `InfrastructureError` if it must be retried.

        Only storage that is down (`Fault.UNAVAILABLE`) fails the batch, to be retried as a
        whole. A message the store refuses (`Fault.DATA`) or our code fails on
        (`Fault.BUG`) is isolated and dead-lettered with the reason, and the others are
        applied exactly once and in their order. Isolating splits the failed batch, each
        part in its own transaction, recursively: around the message that was being
        handled when it failed (the messages before it, it alone, the ones after), or in
        halves when it failed at the end of the batch (a deferred write, a domain's
        end-of-batch hook), which finds one culprit in n in about 2·log2(n) transactions.
        """
        try:
            return await self._apply_committed(batch)
        except (InfrastructureError, FencedError):
            raise
        except Exception as failure:
            index = failure.index if isinstance(failure, _MessageError) else None
            exc = (failure.__cause__ if index is not None else None) or failure
            fault = classify(exc)
            if fault is Fault.UNAVAILABLE:
                self.metrics.batch_failures.labels("database").inc()
                raise InfrastructureError(f"state store unavailable: {describe(exc)}") from exc
            if len(batch) == 1:
                if fault is Fault.BUG:
                    log.error("message on %s could not be applied", batch[0].topic, exc_info=exc)
                else:
                    log.warning(
                        "the state store refused a message on %s: %s", batch[0].topic, describe(exc)
                    )
                return await self._dead_letter_alone(batch[0], fault, exc)
            log.warning(
                "batch of %d failed (%s: %s); isolating the message",
                len(batch),
                fault,
                describe(exc),
            )
        if index is None:
            middle = len(batch) // 2
            parts = [batch[:middle], batch[middle:]]
        else:
            parts = [batch[:index], batch[index : index + 1], batch[index + 1 :]]
        outcome = BatchOutcome()
        for part in parts:
            if not part:
                continue
            done = await self.apply(part)
            outcome.changes += done.changes
            outcome.commands += done.commands
            outcome.publishes += done.publishes
            outcome.applied += done.applied
            outcome.duplicates += done.duplicates
            outcome.dead_lettered += done.dead_lettered
            outcome.committed.update(done.committed)
            outcome.stock_levels += done.stock_levels
        return outcome

    async def _apply_committed(self, batch: Sequence[Incoming]) -> BatchOutcome:
        try:
            async with writing(self.engine) as connection:
                work = _Batch(self, connection)
                await self.prefetch(connection, batch)
                for index, item in enumerate(batch):
                    try:
                        await work.handle(item)
                    except (InfrastructureError, HistoryFullError):
                        raise
                    except Exception as exc:
                        raise _MessageError(index) from exc
                await work.flush()
                await work.finish_domains()
                if self.fence is not None:
                    await self.fence(connection)
                # History first: if the spool refuses the lines the transaction rolls back.
                await self.history.append(work.lines)
        except HistoryFullError as exc:
            self.metrics.batch_failures.labels("spool_full").inc()
            raise InfrastructureError(f"time-series spool full: {exc}") from exc
        self._positions.update(work.positions)
        self._nodes.update(work.nodes)
        for key, expired in work.finished_snapshots.items():
            self.staging.discard(key, expired=expired)
        work.count_metrics()
        for reason, store, node in work.unknown:
            self.unknown_sources.note(reason, store, node)
        self.unknown_sources.flush_due()
        work.outcome.committed = {
            key: position.hw
            for key, position in work.positions.items()
            if position.hw is not None and key[2] not in LIFECYCLE_STREAMS
        }
        return work.outcome

    async def _dead_letter_alone(
        self, item: Incoming, fault: Fault, exc: BaseException
    ) -> BatchOutcome:
        if fault is Fault.DATA:
            detail = f"the state store refused this message: {describe(exc)}"
        else:
            detail = f"the ingestor failed on this message: {describe(exc)}"
        try:
            topic = _parse_topic(item.topic)
        except TopicError:
            store = None
        else:
            store = topic.store if isinstance(topic, NodeTopic) else None
        try:
            async with writing(self.engine) as connection:
                work = _Batch(self, connection)
                work.dead_letter(item, fault.value, detail, store=store)
                await work.flush()
                if self.fence is not None:
                    await self.fence(connection)
        except (DBAPIError, OSError) as exc:
            raise InfrastructureError(f"state store unavailable: {describe(exc)}") from exc
        work.count_metrics()
        return work.outcome

    async def prefetch(self, connection: AsyncConnection, batch: Sequence[Incoming]) -> None:
        """Read the committed positions and liveness of every registered node in `batch`
        not read before, in three statements per `PREFETCH_STORES` stores.

        Otherwise each is read when its node's first message needs it: two round trips per
        stream and one per node. After a broker restart every store's birth comes at once,
        and those reads were most of the time a storm of births took to apply.
        """
        wanted: set[NodeKey] = set()
        for item in batch:
            try:
                topic = _parse_topic(item.topic)
            except TopicError:
                continue  # dead-lettered when its turn comes
            if not isinstance(topic, NodeTopic):
                continue
            node = (topic.store, topic.node)
            if node not in self._loaded and self.registry.knows_node(*node):
                wanted.add(node)
        if not wanted:
            return
        stores = sorted({store for store, _ in wanted})
        t, m, n = schema.stream_positions, schema.dedup_marks, schema.nodes
        positions: dict[StreamKey, StreamPosition] = {}
        nodes: dict[NodeKey, NodeLiveness] = {}
        for start in range(0, len(stores), PREFETCH_STORES):
            chunk = stores[start : start + PREFETCH_STORES]
            rows = await connection.execute(
                select(t.c.store_id, t.c.node_id, t.c.stream, t.c.hw, t.c.birth_seq).where(
                    t.c.store_id.in_(chunk)
                )
            )
            for row in rows:
                if (row.store_id, row.node_id) in wanted:
                    key = (row.store_id, row.node_id, row.stream)
                    positions[key] = StreamPosition(row.hw, row.birth_seq, set())
            marks = await connection.execute(
                select(m.c.store_id, m.c.node_id, m.c.stream, m.c.seq).where(
                    m.c.store_id.in_(chunk)
                )
            )
            for mark in marks:
                if (mark.store_id, mark.node_id) in wanted:
                    key = (mark.store_id, mark.node_id, mark.stream)
                    position = positions.get(key)
                    if position is None:  # marks without a row: as load_position reads it
                        position = positions[key] = StreamPosition(None, None, set())
                    position.marks.add(mark.seq)
            for state in await connection.execute(
                select(n.c.store_id, n.c.node_id, n.c.status, n.c.bd_seq).where(
                    n.c.store_id.in_(chunk)
                )
            ):
                if (state.store_id, state.node_id) in wanted:
                    nodes[(state.store_id, state.node_id)] = NodeLiveness(
                        state.status, state.bd_seq
                    )
        # What is cached already is the newest committed state: kept as it is.
        for key, position in positions.items():
            self._positions.setdefault(key, position)
        for node in wanted:
            self._nodes.setdefault(node, nodes.get(node) or NodeLiveness("unknown", None))
        self._loaded |= wanted

    async def load_position(self, connection: AsyncConnection, key: StreamKey) -> StreamPosition:
        cached = self._positions.get(key)
        if cached is not None:
            return cached
        if key[:2] in self._loaded:
            position = self._positions[key] = StreamPosition(None, None, set())
            return position  # read with its node: a stream without a row yet
        store, node, stream = key
        t, m = schema.stream_positions, schema.dedup_marks
        row = (
            await connection.execute(
                select(t.c.hw, t.c.birth_seq).where(
                    t.c.store_id == store, t.c.node_id == node, t.c.stream == stream
                )
            )
        ).first()
        marks = (
            await connection.execute(
                select(m.c.seq).where(
                    m.c.store_id == store, m.c.node_id == node, m.c.stream == stream
                )
            )
        ).scalars()
        position = StreamPosition(
            row.hw if row else None, row.birth_seq if row else None, set(marks)
        )
        self._positions[key] = position
        return position

    async def load_node(self, connection: AsyncConnection, key: NodeKey) -> NodeLiveness:
        cached = self._nodes.get(key)
        if cached is not None:
            return cached
        t = schema.nodes
        row = (
            await connection.execute(
                select(t.c.status, t.c.bd_seq).where(t.c.store_id == key[0], t.c.node_id == key[1])
            )
        ).first()
        liveness = NodeLiveness(row.status if row else "unknown", row.bd_seq if row else None)
        self._nodes[key] = liveness
        return liveness


class _Batch:
    """The work of one transaction."""

    def __init__(self, applier: StateApplier, connection: AsyncConnection) -> None:
        self.applier = applier
        self.connection = connection
        self.settings = applier.settings
        self.outcome = BatchOutcome()
        self.domain_tx = DomainTx(connection)
        self.lines: list[str] = []
        self.positions: dict[StreamKey, StreamPosition] = {}
        self._original_marks: dict[StreamKey, set[int]] = {}
        self.nodes: dict[NodeKey, NodeLiveness] = {}
        # store -> (shelf, gtin) -> (node, count, updated_at); rows are built once, at flush.
        # By store: a birth or snapshot drops its store's pending rows, and scanning every
        # store's rows for that made a storm of births quadratic in the batch size.
        self._inventory: dict[str, dict[tuple[str, str], tuple[str, int, datetime]]] = {}
        self._inventory_changes: dict[str, list[dict[str, Any]]] = {}
        self._levels: list[StockLevel] = []  # every level set, in message order
        self._dead: list[dict[str, Any]] = []
        self.unknown: list[tuple[str, str, str]] = []  # (reason, store, node), for the log
        # staged snapshots this batch completed (False) or gave up on (True): they leave
        # the staging only once the batch committed
        self.finished_snapshots: dict[SnapshotKey, bool] = {}
        self._health_rows: dict[NodeKey, Health] = {}  # the latest per node
        # node -> the columns its lifecycle messages set, the later ones over the earlier:
        # written at the end of the batch, one statement per set of columns
        self._node_rows: dict[NodeKey, dict[str, Any]] = {}
        self._ingested: dict[str, int] = {}
        self._dead_reasons: dict[str, int] = {}
        self._ignored: dict[str, int] = {}
        self._gave_up = 0

    # ------------------------------------------------------------------ per message

    async def handle(self, item: Incoming) -> None:
        try:
            topic = _parse_topic(item.topic)
        except TopicError as exc:
            self.dead_letter(item, "bad_topic", exc.reason)
            return
        if isinstance(topic, ShopperTopic):
            self._ignore("offer")  # cloud -> shopper traffic, not ours to ingest
            return
        if topic.channel is Channel.CMD:
            self._ignore("command")  # our own commands to the edge
            return
        if topic.channel is Channel.COMMITTED:
            self._ignore("committed")  # our own commit marks (a shared subscription sees them)
            return
        registry = self.applier.registry
        if not registry.knows_store(topic.store):
            self.dead_letter(item, "unknown_store", f"store {topic.store!r} is not registered")
            self.unknown.append(("unknown_store", topic.store, topic.node))
            return
        if not registry.knows_node(topic.store, topic.node):
            self.unknown.append(("unknown_node", topic.store, topic.node))
            self.dead_letter(
                item,
                "unknown_node",
                f"node {topic.node!r} is not registered for store {topic.store!r}",
            )
            return
        try:
            message = decode(item.payload, topic=item.topic)
        except DecodeError as exc:
            self.dead_letter(item, exc.reason.value, exc.detail, store=topic.store)
            return
        await self._apply(topic, message)

    async def _apply(self, topic: NodeTopic, message: Message) -> None:
        applied = await self._apply_core(topic, message)
        if applied is not None:
            live, whole = applied
            for domain in self.applier.domains:
                await domain.on_message(self.domain_tx, whole, live=live)

    async def _apply_core(self, topic: NodeTopic, message: Message) -> tuple[bool, Message] | None:
        """Apply to the core state; None if the message was not admitted (or is a part of
        a snapshot still incomplete), else whether it is live (not already covered by the
        latest birth) and the message applied (a split snapshot with all its parts)."""
        if isinstance(message, Status):
            # Status is retained and re-sent on every subscribe; bd_seq orders it, not seq.
            await self._status(message)
            self._applied(message)
            return True, message
        key = (message.store, message.node, message.stream)
        position = await self._position(key)
        admission = admit(
            position,
            message.seq,
            window=self.settings.dedup_window,
            # never resent by the edge: a gap in them is for good, only the newest counts
            newest_only=message.stream in LIFECYCLE_STREAMS,
        )
        if admission.duplicate:
            # Births keep only the newest seq, but a late part of a split birth still being
            # assembled is not stale: it completes that birth.
            late_part = isinstance(message, Birth) and self.applier.staging.waits_for(message)
            if not late_part:
                self.outcome.duplicates += 1
                return None
            admission = _LATE_PART
        self._applied(message)
        if admission.gave_up:
            self._gave_up += 1
        if admission.gap is not None and topic.channel in RESYNC_CHANNELS:
            await self._resync(message, admission)
        await self._expire_staged(message)
        if isinstance(message, Birth | RfidSnapshot) and message.parts > 1:
            whole = self._stage(message)
            if whole is None:
                return None
            message = whole
        if isinstance(message, Birth):
            await self._birth(message)
        elif isinstance(message, Death):
            await self._death(message)
        elif isinstance(message, Health):
            await self._health(message)
        elif isinstance(message, CommandAck):
            await self._ack(message)
        elif admission.live and isinstance(message, RfidEvents):
            for delta in message.counts:
                self._set_count(message, delta.shelf, delta.gtin, delta.count)
        elif admission.live and isinstance(message, RfidSnapshot):
            shelves = {row.shelf for row in message.shelves}
            await self._clear_shelves(
                message, shelves, {(r.shelf, r.gtin) for r in message.shelves}
            )
            for row in message.shelves:
                self._set_count(message, row.shelf, row.gtin, row.count)
        # Lockers, BLE presence and offers are the domains' (cloud/domains.py).
        return bool(admission.live), message

    def _stage(self, message: SnapshotPart) -> SnapshotPart | None:
        """The whole snapshot once `message` completes it, else None (it waits staged)."""
        try:
            parts = self.applier.staging.add(message)
        except PartError as exc:
            log.warning(
                "%s/%s: %s on %s ignored: %s",
                message.store,
                message.node,
                message.type,
                message.stream,
                exc,
            )
            self._ignore("bad_snapshot_part")
            return None
        if parts is None:
            return None
        assert message.snapshot_id is not None  # add() refuses parts without one
        key = (message.store, message.node, message.stream, message.snapshot_id)
        self.finished_snapshots[key] = False
        shelves = [row for part in parts for row in part.shelves]
        return parts[0].model_copy(update={"shelves": shelves})

    async def _expire_staged(self, message: Message) -> None:
        """A staged snapshot whose parts did not all come in time: give up on it and ask
        the node for a new birth (the whole snapshot again, not the missing parts)."""
        expired = self.applier.staging.expired_for(message.store, message.node)
        for key, missing in expired:
            if key in self.finished_snapshots:
                continue
            self.finished_snapshots[key] = True
            self._ignore("snapshot_expired")
            stream, snapshot_id = key[2], key[3]
            log.warning(
                "%s/%s: snapshot %s on %s incomplete after %.0f s (parts %s missing): "
                "dropped, asking for a resync",
                message.store,
                message.node,
                snapshot_id,
                stream,
                self.applier.staging.timeout_s,
                missing[:20],
            )
            await self._request_resync(
                message,
                {
                    "reason": f"snapshot {snapshot_id} on {stream}: parts {missing[:20]} missing",
                    "stream": stream,
                    "snapshot_id": snapshot_id,
                    "missing_parts": missing[:100],
                },
            )

    def _applied(self, message: Message) -> None:
        self.outcome.applied += 1
        self._ingested[message.type] = self._ingested.get(message.type, 0) + 1
        self.lines.extend(self.applier.history.lines(message))

    async def _position(self, key: StreamKey) -> StreamPosition:
        position = self.positions.get(key)
        if position is None:
            committed = await self.applier.load_position(self.connection, key)
            position = committed.copy()
            self.positions[key] = position
            self._original_marks[key] = set(committed.marks)
        return position

    async def _node(self, store: str, node: str) -> NodeLiveness:
        key = (store, node)
        liveness = self.nodes.get(key)
        if liveness is None:
            committed = await self.applier.load_node(self.connection, key)
            liveness = NodeLiveness(committed.status, committed.bd_seq)
            self.nodes[key] = liveness
        return liveness

    # ------------------------------------------------------------------ lifecycle

    async def _status(self, message: Status) -> None:
        liveness = await self._node(message.store, message.node)
        if liveness.bd_seq is not None and message.bd_seq < liveness.bd_seq:
            # A will (or retained status) of an older session: a newer one has been born.
            self._ignore("stale_status")
            return
        await self._set_node_state(message, message.state.value, message.bd_seq)

    async def _death(self, message: Death) -> None:
        liveness = await self._node(message.store, message.node)
        if liveness.bd_seq is not None and message.bd_seq < liveness.bd_seq:
            self._ignore("stale_death")
            return
        await self._set_node_state(message, NodeState.OFFLINE.value, message.bd_seq)

    async def _set_node_state(
        self, message: Message, status: str, bd_seq: int, **more: Any
    ) -> None:
        """The node's state; `more`: other columns of its row, set by the same statement."""
        liveness = await self._node(message.store, message.node)
        changed = (liveness.status, liveness.bd_seq) != (status, bd_seq)
        liveness.status, liveness.bd_seq = status, bd_seq
        row = self._node_rows.setdefault((message.store, message.node), {})
        row.update(status=status, bd_seq=bd_seq, last_seen=message.sent_time, **more)
        if changed:
            self._change(
                "node_status",
                message.store,
                {"node": message.node, "status": status, "bd_seq": bd_seq},
            )

    async def _birth(self, message: Birth) -> None:
        liveness = await self._node(message.store, message.node)
        if liveness.bd_seq is not None and message.bd_seq < liveness.bd_seq:
            self._ignore("stale_birth")  # history only; a newer session already rebuilt state
            return
        await self._set_node_state(
            message,
            NodeState.ONLINE.value,
            message.bd_seq,
            version=message.version,
            devices=[device.model_dump(mode="json") for device in message.devices],
            last_birth_at=message.event_time,
        )
        # The snapshot replaces this node's shelves.
        inventory = schema.inventory
        removed = await self.connection.execute(
            delete(inventory)
            .where(inventory.c.store_id == message.store, inventory.c.node_id == message.node)
            .returning(inventory.c.shelf, inventory.c.gtin)
        )
        gone = {(message.store, shelf, gtin) for shelf, gtin in removed.all()}
        pending = self._inventory.get(message.store, {})
        for key in [k for k, row in pending.items() if row[0] == message.node]:
            del pending[key]
            gone.add((message.store, *key))
        self._zero_levels(message, gone, {(s.shelf, s.gtin) for s in message.shelves})
        for shelf in message.shelves:
            self._set_count(message, shelf.shelf, shelf.gtin, shelf.count)
        self._change(
            "inventory_replaced",
            message.store,
            {"node": message.node, "shelves": len(message.shelves)},
        )
        for announced in message.streams:
            position = await self._position((message.store, message.node, announced.stream))
            dropped = [(run.first, run.last) for run in announced.dropped]
            on_birth(position, announced.seq, announced.kept_from, dropped)

    async def _health(self, message: Health) -> None:
        # Written once per node at the end of the batch: a statement per heartbeat was a
        # round trip to the database thread for every sixth message of a store's traffic.
        # A backlog brings several heartbeats of a node per batch; only the last is kept,
        # so it is the only one turned into a row.
        self._health_rows[(message.store, message.node)] = message

    async def _ack(self, message: CommandAck) -> None:
        t = schema.commands
        condition = and_(
            t.c.correlation_id == message.correlation_id,
            t.c.store_id == message.store,
            t.c.node_id == message.node,
        )
        # An ack never moves a command backwards (a late `accepted` after `done`).
        if message.status.final:
            condition = and_(condition, t.c.status.not_in(FINAL_ACKS))
        else:
            condition = and_(condition, t.c.status == "sent")
        await self.connection.execute(
            update(t)
            .where(condition)
            .values(status=message.status.value, reason=message.reason, updated_at=utc_now())
        )

    # ------------------------------------------------------------------ resync

    async def _resync(self, message: Message, admission: Admission) -> None:
        assert admission.gap is not None
        first, last = admission.gap
        await self._request_resync(
            message,
            {
                "reason": f"gap on {message.stream}: seq {first}..{last} missing",
                "stream": message.stream,
                "missing_from": first,
                "missing_to": last,
            },
        )

    async def _request_resync(self, message: Message, args: dict[str, Any]) -> None:
        t = schema.commands
        now = utc_now()
        last_sent = (
            await self.connection.execute(
                select(func.max(t.c.sent_at)).where(
                    t.c.store_id == message.store, t.c.node_id == message.node, t.c.name == RESYNC
                )
            )
        ).scalar()
        pending = [
            c for c in self.outcome.commands if (c.store, c.node) == (message.store, message.node)
        ]
        if pending:
            return
        if last_sent is not None:
            if last_sent.tzinfo is None:  # SQLite hands back naive UTC
                last_sent = last_sent.replace(tzinfo=now.tzinfo)
            if (now - last_sent).total_seconds() < self.settings.resync_min_interval_s:
                self._ignore("resync_rate_limited")
                return
        seq = (
            await self.connection.execute(
                select(func.coalesce(func.max(t.c.seq), -1)).where(
                    t.c.store_id == message.store, t.c.node_id == message.node, t.c.name == RESYNC
                )
            )
        ).scalar_one() + 1
        command = Command(
            store=message.store,
            node=message.node,
            seq=seq,
            name=RESYNC,
            correlation_id=new_message_id(),
            expires_at=now + timedelta(seconds=self.settings.resync_expiry_s),
            args=args,
        )
        await self.connection.execute(
            schema.commands.insert().values(
                correlation_id=command.correlation_id,
                store_id=command.store,
                node_id=command.node,
                name=RESYNC,
                seq=seq,
                args=args,
                status="sent",
                sent_at=now,
                expires_at=command.expires_at,
                updated_at=now,
            )
        )
        self.outcome.commands.append(command)

    # ------------------------------------------------------------------ inventory

    def _set_count(self, message: Message, shelf: str, gtin: str, count: int) -> None:
        pending = self._inventory.get(message.store)
        if pending is None:
            pending = self._inventory[message.store] = {}
        pending[(shelf, gtin)] = (message.node, count, message.event_time)
        self._levels.append(StockLevel(message.store, shelf, gtin, count, message.event_time))

    async def _clear_shelves(
        self, message: Message, shelves: set[str], kept: set[tuple[str, str]]
    ) -> None:
        """Delete `shelves` before a snapshot sets them; `kept`: the (shelf, gtin) it sets."""
        if not shelves:
            return
        store = message.store
        inventory = schema.inventory
        removed = await self.connection.execute(
            delete(inventory)
            .where(inventory.c.store_id == store, inventory.c.shelf.in_(shelves))
            .returning(inventory.c.shelf, inventory.c.gtin)
        )
        gone = {(store, shelf, gtin) for shelf, gtin in removed.all()}
        pending = self._inventory.get(store, {})
        for key in [k for k in pending if k[0] in shelves]:
            del pending[key]
            gone.add((store, *key))
        self._zero_levels(message, gone, kept)

    def _zero_levels(
        self, message: Message, gone: set[tuple[str, str, str]], kept: set[tuple[str, str]]
    ) -> None:
        """A removed row the message does not set again is a level of 0 from now on."""
        for store, shelf, gtin in sorted(gone):
            if (shelf, gtin) not in kept:
                self._levels.append(StockLevel(store, shelf, gtin, 0, message.event_time))

    # ------------------------------------------------------------------ dead letters

    def dead_letter(
        self, item: Incoming, reason: str, detail: str, *, store: str | None = None
    ) -> None:
        row = {
            "topic": _printable(item.topic)[:512],
            "payload_excerpt": payload_excerpt(item.payload),
            "payload_bytes": len(item.payload),
            "reason": reason[:32],
            "detail": _printable(detail)[:1000],
            "store_id": store,
            "received_at": item.received_at,
        }
        self._dead.append(row)
        self.outcome.dead_lettered += 1
        self._dead_reasons[reason] = self._dead_reasons.get(reason, 0) + 1
        self._change(
            "dead_letter",
            store,
            {"topic": row["topic"], "reason": reason, "detail": row["detail"]},
        )

    # ------------------------------------------------------------------ end of batch

    async def flush(self) -> None:
        connection = self.connection
        now = utc_now()
        if self._inventory:
            rows = [
                {
                    "store_id": store,
                    "shelf": shelf,
                    "gtin": gtin,
                    "node_id": node,
                    "count": count,
                    "updated_at": updated_at,
                }
                for store, pending in self._inventory.items()
                for (shelf, gtin), (node, count, updated_at) in pending.items()
            ]
            await upsert(connection, schema.inventory, rows, keys=("store_id", "shelf", "gtin"))
            for store, pending in self._inventory.items():
                if pending:
                    self._inventory_changes.setdefault(store, []).extend(
                        {"shelf": shelf, "gtin": gtin, "count": count}
                        for (shelf, gtin), (_node, count, _at) in pending.items()
                    )
            for store, items in self._inventory_changes.items():
                self._change("inventory", store, {"items": items})
        self.outcome.stock_levels = self._levels
        if self.positions:
            rows = [
                {
                    "store_id": store,
                    "node_id": node,
                    "stream": stream,
                    "hw": position.hw,
                    "birth_seq": position.birth_seq,
                    "updated_at": now,
                }
                for (store, node, stream), position in self.positions.items()
            ]
            await upsert(
                connection, schema.stream_positions, rows, keys=("store_id", "node_id", "stream")
            )
            await self._flush_marks()
        if self._node_rows:
            by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
            for (store, node), values in self._node_rows.items():
                more = tuple(sorted(set(values) - {"status", "bd_seq", "last_seen"}))
                by_columns.setdefault(more, []).append({"b_store": store, "b_node": node, **values})
            for more, params in by_columns.items():
                await connection.execute(_node_update(more), params)
        if self._health_rows:
            # after the node states: a heartbeat's last_seen stands, as it always did
            t = schema.nodes
            await connection.execute(
                update(t)
                .where(t.c.store_id == bindparam("b_store"), t.c.node_id == bindparam("b_node"))
                .values(
                    health=bindparam("health"),
                    health_at=bindparam("health_at"),
                    last_seen=bindparam("last_seen"),
                ),
                [
                    {
                        "b_store": message.store,
                        "b_node": message.node,
                        "health": message.model_dump(mode="json", include=HEALTH_FIELDS),
                        "health_at": message.event_time,
                        "last_seen": message.sent_time,
                    }
                    for message in self._health_rows.values()
                ],
            )
        if self._dead:
            await connection.execute(schema.dead_letters.insert(), self._dead)

    async def finish_domains(self) -> None:
        """Run the domains' end-of-batch hooks and take over what they queued."""
        tx = self.domain_tx
        tx.inventory_changes = self._inventory_changes
        for domain in self.applier.domains:
            await domain.before_commit(tx)
        tx.collect_latest()
        self.outcome.changes += tx.changes
        self.outcome.commands += tx.commands
        self.outcome.publishes += tx.publishes

    async def _flush_marks(self) -> None:
        m = schema.dedup_marks
        added: list[dict[str, Any]] = []
        for key, position in self.positions.items():
            original = self._original_marks.get(key, set())
            if position.marks == original:
                continue
            store, node, stream = key
            removed = original - position.marks
            if removed:
                await self.connection.execute(
                    delete(m).where(
                        m.c.store_id == store,
                        m.c.node_id == node,
                        m.c.stream == stream,
                        m.c.seq.in_(removed),
                    )
                )
            added += [
                {"store_id": store, "node_id": node, "stream": stream, "seq": seq}
                for seq in position.marks - original
            ]
        if added:
            await self.connection.execute(m.insert(), added)

    def count_metrics(self) -> None:
        metrics = self.applier.metrics
        for type_name, count in self._ingested.items():
            metrics.ingested.labels(type_name).inc(count)
        for reason, count in self._dead_reasons.items():
            metrics.dead_lettered.labels(reason).inc(count)
        for why, count in self._ignored.items():
            metrics.ignored.labels(why).inc(count)
        if self.outcome.duplicates:
            metrics.duplicates.inc(self.outcome.duplicates)
        if self._gave_up:
            metrics.gaps_given_up.inc(self._gave_up)

    def _ignore(self, why: str) -> None:
        self._ignored[why] = self._ignored.get(why, 0) + 1

    def _change(self, kind: str, store: str | None, data: dict[str, Any]) -> None:
        self.outcome.changes.append(Change(kind, store, data))


@functools.lru_cache(maxsize=8192)
def _parse_topic(topic: str) -> NodeTopic | ShopperTopic:
    """Topics repeat (one per stream), so parse each once; errors are not cached."""
    return parse_topic(topic)


@functools.lru_cache(maxsize=8)
def _node_update(more: tuple[str, ...]) -> Any:
    """UPDATE of a node's state (and the columns `more`), built once: building it for every
    birth (its JSON devices column above all) cost more than running it."""
    t = schema.nodes
    columns = ("status", "bd_seq", "last_seen", *more)
    return (
        update(t)
        .where(t.c.store_id == bindparam("b_store"), t.c.node_id == bindparam("b_node"))
        .values({column: bindparam(column) for column in columns})
    )


def _printable(text: str) -> str:
    """PostgreSQL text cannot hold NUL; keep the excerpt readable and storable."""
    return text.replace("\x00", "\\x00")


# A `\xNN` escape cut short at the end of a truncated excerpt.
_PARTIAL_ESCAPE = re.compile(r"\\(x[0-9a-f]?)?$")


def payload_excerpt(payload: bytes, limit: int = PAYLOAD_EXCERPT_BYTES) -> str:
    """The start of a payload as text of at most `limit` bytes in UTF-8.

    Undecodable bytes become `\\xNN` and NUL becomes `\\x00` (storable in PostgreSQL text,
    readable in the API). Each such escape is 4 bytes for 1 of the payload, so binary
    payloads are cut by the length of their escaped text, not by the payload's length:
    1 KiB of escaped binary once made a 4 KiB excerpt.
    """
    text = _printable(payload[:limit].decode("utf-8", "backslashreplace"))
    encoded = text.encode()
    if len(encoded) <= limit:
        return text
    # Cut at a character boundary, and not inside an escape.
    return _PARTIAL_ESCAPE.sub("", encoded[:limit].decode("utf-8", "ignore"))
