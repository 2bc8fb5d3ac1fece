"""What every shelf-reader driver shares, whatever protocol brings the reads in.

A `ShelfReaderDriver` owns the presence engine and everything downstream of it: the
publish loop (tick the engine every epoch, emit `RfidEvents` every `report_interval_s`, an
`RfidSnapshot` every `snapshot_interval_s`), the queue of batches the runtime refused, the
snapshot for births, the metrics, and the reader up/down bookkeeping (DEGRADED + the outage
guard). A protocol driver (LLRP, Impinj IoT, Zebra IoT Connector) only implements
`_connection_loop()`: connect, feed reads with `self.engine.observe()`, call `_reader_up()` /
`_reader_down()`, reconnect.
"""

from __future__ import annotations

import abc
import asyncio
import random
import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from edge.drivers.base import Driver, DriverContext, DriverSnapshot, Priority
from edge.rfid.presence import PresenceConfig, PresenceEngine
from protocols.messages import (
    CountDelta,
    DeviceInfo,
    DeviceKind,
    DriverState,
    ItemEvent,
    RfidEvents,
    RfidSnapshot,
    new_message_id,
)
from protocols.sizing import MAX_ENTRIES, WORST_CASE_SEQ, split_by_size, split_pair_by_size

MAX_BATCH = MAX_ENTRIES  # the contract's max items/counts per message; bytes bound them first
MAX_UNSENT = 1_000  # batches kept while the runtime refuses them; then the oldest go
FLUSH_CHUNK = 500  # item events made into models at a time (~0.6 KB each while they live)
NO_RSSI_DBM = -80.0  # a weak default for a read that came without a peak RSSI


def epc_hex(value: object) -> str | None:
    """The EPC as upper-case hex, or None when `value` is not a whole number of hex bytes."""
    if not isinstance(value, str) or not value or len(value) % 2:
        return None
    try:
        bytes.fromhex(value)
    except ValueError:
        return None
    return value.upper()


class Backoff:
    """Exponential backoff with ±20 % jitter; `reset()` after a connection that worked."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.current_s = initial_s

    def reset(self) -> None:
        self.current_s = self.initial_s

    async def sleep(self) -> None:
        await asyncio.sleep(self.current_s * random.uniform(0.8, 1.2))
        self.current_s = min(self.current_s * 2, self.max_s)


class ShelfReaderDriver(Driver):
    kind = DeviceKind.RFID_READER

    def __init__(
        self,
        device: str,
        antennas: Mapping[int, str],
        presence: Mapping[str, Any],
        *,
        report_interval_s: float,
        snapshot_interval_s: float,
    ) -> None:
        super().__init__(device)
        self.engine = PresenceEngine(antennas, PresenceConfig(**presence))
        self.report_interval_s = report_interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.model: str | None = None
        self.firmware: str | None = None
        self.bad_events = 0  # malformed lines / events / payloads, skipped
        self._reads_at_last_rate = 0
        self._rate_t = time.monotonic()
        self._reads_per_s = 0.0
        self._messages_out = 0
        self._unsent: deque[tuple[list[ItemEvent], list[CountDelta]]] = deque()
        self.dropped_batches = 0

    # ------------------------------------------------------------------ Driver

    async def run(self, ctx: DriverContext) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._publish_loop(ctx), name=f"{self.device}-publish")
                group.create_task(self._connection_loop(ctx), name=f"{self.device}-reader")
        except ExceptionGroup as failed:
            # the runtime shows the error: give it the real one, not "unhandled errors..."
            raise failed.exceptions[0] from None

    @abc.abstractmethod
    async def _connection_loop(self, ctx: DriverContext) -> None:
        """Connect, feed reads into `self.engine`, reconnect; runs until cancelled."""

    def info(self) -> DeviceInfo:
        return DeviceInfo(
            device=self.device,
            kind=self.kind,
            driver=self.driver_name,
            state=DriverState.RUNNING if self.connected.is_set() else DriverState.DEGRADED,
            model=self.model,
            firmware=self.firmware,
        )

    def snapshot(self) -> DriverSnapshot:
        return DriverSnapshot(shelves=self.engine.shelf_counts())

    def metrics(self) -> dict[str, float]:
        now = time.monotonic()
        if now - self._rate_t >= 1.0:
            self._reads_per_s = (self.engine.reads - self._reads_at_last_rate) / (
                now - self._rate_t
            )
            self._reads_at_last_rate = self.engine.reads
            self._rate_t = now
        return {
            "reads_per_s": round(self._reads_per_s, 1),
            "reads_total": float(self.engine.reads),
            "items_present": float(self.engine.items_present),
            "tags_tracked": float(self.engine.tracked),
            "unmapped_reads": float(self.engine.unmapped_reads),
            "reconnects": float(self.reconnects),
            "messages_out": float(self._messages_out),
            "unsent_batches": float(len(self._unsent)),
            "dropped_batches": float(self.dropped_batches),
            **self._extra_metrics(),
        }

    def _extra_metrics(self) -> dict[str, float]:
        """Protocol-specific gauges added to `metrics()`."""
        return {}

    # ------------------------------------------------------------------ reader state

    def _reader_up(self, ctx: DriverContext) -> None:
        self.connected.set()
        self.engine.set_reader_up(True, time.time())
        ctx.set_state(DriverState.RUNNING)

    def _reader_down(self, ctx: DriverContext, reason: str, *, reconnecting: bool = True) -> bool:
        """Report DEGRADED and freeze departures (a reader that is gone does not make items
        disappear). Returns whether it was up until now (the caller resets its backoff).
        `reconnecting=False`: the connection is still there but the reader is not reading."""
        was_up = self.connected.is_set()
        self.connected.clear()
        self.engine.set_reader_up(False, time.time())
        if was_up and reconnecting:
            self.reconnects += 1
        ctx.set_state(DriverState.DEGRADED, reason)
        return was_up

    # ------------------------------------------------------------------ output

    async def _publish_loop(self, ctx: DriverContext) -> None:
        epoch_s = self.engine.config.epoch_s
        next_report = time.monotonic() + self.report_interval_s
        next_snapshot = time.monotonic() + self.snapshot_interval_s
        while True:
            await asyncio.sleep(epoch_s)
            self.engine.tick(time.time())
            now = time.monotonic()
            if now >= next_report:
                next_report = now + self.report_interval_s
                self.flush(ctx)
            if now >= next_snapshot:
                next_snapshot = now + self.snapshot_interval_s
                self._emit_snapshot(ctx)

    def flush(self, ctx: DriverContext) -> None:
        """Emit the item events and count deltas gathered since the last flush.

        Batches the runtime could not take (ctx.emit raised) stay queued, in order, and go
        first next time, also after a restart of run(); past MAX_UNSENT the oldest are
        dropped and counted (the periodic snapshot then repairs the counts). Batches are
        cut by encoded size (protocols.sizing), so a report of any number of tags fits.

        The events become message models FLUSH_CHUNK at a time, each chunk cut and emitted
        before the next is built, so a store's arrival flood never exists as one list of
        models; the count deltas go with the last chunk, after every item event, as when
        the whole list was cut at once."""
        chunks = (self.engine.pending_events + FLUSH_CHUNK - 1) // FLUSH_CHUNK
        events = self.engine.drain_event_chunks(FLUSH_CHUNK)
        counts = self.engine.drain_counts()
        if counts:
            chunks = max(chunks, 1)
        envelope = RfidEvents(
            store=ctx.store, node=ctx.node, seq=WORST_CASE_SEQ, reader=self.device
        )
        for number in range(chunks):
            last = number == chunks - 1
            self._unsent.extend(
                split_pair_by_size(next(events, []), counts if last else [], envelope)
            )
            try:
                self._send_unsent(ctx)
            except BaseException:
                # the runtime refused: what is not built yet is queued behind, in order
                for later in range(number + 1, chunks):
                    final = later == chunks - 1
                    self._unsent.extend(
                        split_pair_by_size(next(events, []), counts if final else [], envelope)
                    )
                self._bound_unsent()
                raise
        if not chunks:
            self._send_unsent(ctx)

    def _bound_unsent(self) -> None:
        while len(self._unsent) > MAX_UNSENT:
            self._unsent.popleft()
            self.dropped_batches += 1

    def _send_unsent(self, ctx: DriverContext) -> None:
        self._bound_unsent()
        while self._unsent:
            batch_items, batch_counts = self._unsent[0]
            ctx.emit(RfidEvents, reader=self.device, items=batch_items, counts=batch_counts)
            self._unsent.popleft()
            self._messages_out += 1

    def _emit_snapshot(self, ctx: DriverContext) -> None:
        shelves = self.engine.shelf_counts()
        snapshot_id = new_message_id()
        envelope = RfidSnapshot(
            store=ctx.store,
            node=ctx.node,
            seq=WORST_CASE_SEQ,
            reader=self.device,
            part=WORST_CASE_SEQ,
            parts=WORST_CASE_SEQ,
            snapshot_id=snapshot_id,
        )
        parts = split_by_size(shelves, envelope)
        for number, part in enumerate(parts, 1):
            ctx.emit(
                RfidSnapshot,
                priority=Priority.SNAPSHOT,
                reader=self.device,
                shelves=part,
                part=number,
                parts=len(parts),
                snapshot_id=snapshot_id if len(parts) > 1 else None,
            )
            self._messages_out += 1


def share_tag_claims(drivers: Iterable[object]) -> int:
    """Give the presence engines of a node's shelf readers one claim table, so an item one
    reader has on a shelf does not arrive again at a neighbouring reader that cross-reads
    it. Returns how many engines share it."""
    claims: dict[bytes, PresenceEngine] = {}
    engines = [d.engine for d in drivers if isinstance(d, ShelfReaderDriver)]
    for engine in engines:
        engine.claims = claims
    return len(engines)
