"""Stock levels per store, shelf and GTIN as a time series: at every change, and periodically.

`shelf_count` is what each edge message said, spooled before the commit. `stock_level` is the
cloud's committed inventory: the level of every (store, shelf, GTIN) row a batch wrote, 0 for
a row a snapshot or birth removed (which `shelf_count` never shows), and, every
`history.stock_snapshot_interval_s`, every row again, so any chart window finds the level it
starts with without reading back further than one interval.

Changes are recorded AFTER the commit and never hold the ingestor up (it has acked by then):
`record` puts them on a bounded in-memory queue and returns; a task moves them to the
durable spool, whose pump writes them to InfluxDB (or the SQL `history` table).

Queue policy (`history.stock_queue_points`), for when the spool cannot keep up or is full:
below the bound every change is kept (plus at most one batch being written, `batch_points`);
at the bound a change replaces the queued change of the same (store, shelf, GTIN) in place
(the series loses an intermediate level, not its latest), and a change of a series with
nothing queued is dropped. Both are counted
(`storegate_history_stock_changes_total{outcome="coalesced"|"dropped"}`) and logged once per
episode; the next snapshot writes every level again. A crash between the commit and the
spool loses the queued changes the same way, and the snapshot repairs it the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.timeseries.lineprotocol import series_text
from cloud.timeseries.schema import STOCK_LEVEL, time_ns
from cloud.timeseries.spool import Spool, SpoolFull

log = logging.getLogger(__name__)

SeriesKey = tuple[str, str, str]  # (store, shelf, gtin)
SNAPSHOT_SPOOL_SHARE = 0.5  # a snapshot page waits while the spool is fuller than this


@dataclass(frozen=True, slots=True)
class StockLevel:
    """The committed count of one GTIN on one shelf, as of `at`."""

    store: str
    shelf: str
    gtin: str
    count: int
    at: datetime


def stock_level_line(
    store: str, shelf: str, gtin: str, count: int, at_ns: int, *, snapshot: bool
) -> str:
    """`stock_level,gtin=..,shelf=..,store=.. count=<n>i,snapshot=<bool> <ns>`."""
    series = series_text(STOCK_LEVEL, "gtin", gtin, "shelf", shelf, "store", store)
    return f"{series} count={count}i,snapshot={'true' if snapshot else 'false'} {at_ns}"


@dataclass(frozen=True, slots=True)
class StockRecorderStats:
    queued: int  # changes waiting for the spool
    recorded: int  # changes taken by `record`
    spooled: int  # change points written to the spool
    coalesced: int  # changes that replaced a queued one of their series (queue full)
    dropped: int  # changes dropped (queue full, nothing of their series queued)
    snapshots: int  # complete snapshots
    snapshot_points: int
    snapshot_failures: int
    last_snapshot_at: float | None  # Unix time the last complete snapshot ended


class _Queued:
    __slots__ = ("at_ns", "count", "key")

    def __init__(self, key: SeriesKey, count: int, at_ns: int) -> None:
        self.key, self.count, self.at_ns = key, count, at_ns


class StockRecorder:
    """Writes `stock_level` points to the spool: changes after each commit, and snapshots."""

    def __init__(
        self,
        spool: Spool,
        engine: AsyncEngine,
        *,
        snapshot_interval_s: float = 900.0,
        page_rows: int = 5_000,
        queue_points: int = 100_000,
        batch_points: int = 5_000,
        on_spooled: Callable[[], None] | None = None,
        retry_s: float = 0.5,
    ) -> None:
        self.spool = spool
        self.engine = engine
        self.snapshot_interval_s = snapshot_interval_s
        self.page_rows = page_rows
        self.queue_points = queue_points
        self.batch_points = batch_points
        self.retry_s = retry_s
        self._on_spooled = on_spooled
        self._queue: deque[_Queued] = deque()
        self._latest: dict[SeriesKey, _Queued] = {}  # the newest queued change per series
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._recorded = self._spooled = self._coalesced = self._dropped = 0
        self._snapshots = self._snapshot_points = self._snapshot_failures = 0
        self._last_snapshot_at: float | None = None
        self._overflowing = False
        self._overflow_lost = 0  # coalesced + dropped in the current episode

    # ----------------------------------------------------------------- changes

    def record(self, levels: Iterable[StockLevel]) -> None:
        """Queue committed levels; never blocks (see the queue policy above)."""
        queue, latest = self._queue, self._latest
        for level in levels:
            self._recorded += 1
            key = (level.store, level.shelf, level.gtin)
            at_ns = time_ns(level.at)
            if len(queue) < self.queue_points:
                entry = _Queued(key, level.count, at_ns)
                queue.append(entry)
                latest[key] = entry
                continue
            queued = latest.get(key)
            if queued is not None:
                queued.count, queued.at_ns = level.count, at_ns
                self._coalesced += 1
            else:
                self._dropped += 1
            self._overflow(len(queue))
        if queue:
            self._wake.set()

    def _overflow(self, depth: int) -> None:
        self._overflow_lost += 1
        if not self._overflowing:
            self._overflowing = True
            log.warning(
                "stock levels: %d changes queued for the time-series spool (the bound): "
                "changes are coalesced per shelf and GTIN or dropped until it drains; the next "
                "snapshot writes every level again",
                depth,
            )

    def _drained(self) -> None:
        if self._overflowing and not self._queue:
            log.warning(
                "stock levels: queue drained; %d changes were coalesced or dropped meanwhile",
                self._overflow_lost,
            )
            self._overflowing, self._overflow_lost = False, 0

    async def _drain_loop(self) -> None:
        while True:
            if not self._queue:
                self._drained()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            await self.flush_once()

    async def flush_once(self) -> bool:
        """Move up to `batch_points` queued changes to the spool; False if it was full."""
        queue, latest = self._queue, self._latest
        taken = [queue.popleft() for _ in range(min(self.batch_points, len(queue)))]
        for entry in taken:
            if latest.get(entry.key) is entry:
                del latest[entry.key]  # later changes of the series now queue anew
        lines = [
            stock_level_line(*entry.key, entry.count, entry.at_ns, snapshot=False)
            for entry in taken
        ]
        try:
            await self.spool.append_async(lines)
        except SpoolFull:
            for entry in reversed(taken):  # back in front, in order: retried first
                queue.appendleft(entry)
                latest.setdefault(entry.key, entry)
            if self._stopping:
                raise
            await asyncio.sleep(self.retry_s)  # the queue bound protects memory meanwhile
            return False
        except Exception:  # the spool's disk, or a batch it can never hold: not retryable
            self._dropped += len(taken)
            log.exception(
                "stock levels: %d changes could not be spooled and are dropped (the next "
                "snapshot writes every level again)",
                len(taken),
            )
            return True
        self._spooled += len(lines)
        if self._on_spooled is not None:
            self._on_spooled()
        return True

    # ----------------------------------------------------------------- snapshots

    async def snapshot(self) -> int:
        """Write every inventory row's level now, page by page; the points written."""
        from cloud.state.schema import inventory

        columns = (inventory.c.store_id, inventory.c.shelf, inventory.c.gtin, inventory.c.count)
        after: tuple[str, str, str] | None = None
        written = 0
        deadline = time.monotonic() + max(self.snapshot_interval_s, 1.0)
        while True:
            statement = select(*columns).order_by(*columns[:3]).limit(self.page_rows)
            if after is not None:
                statement = statement.where(tuple_(*columns[:3]) > after)
            async with self.engine.connect() as connection:
                rows = (await connection.execute(statement)).all()
            if not rows:
                break
            await self._wait_for_spool_share(deadline)
            at_ns = time.time_ns()
            lines = [
                stock_level_line(store, shelf, gtin, count, at_ns, snapshot=True)
                for store, shelf, gtin, count in rows
            ]
            await self.spool.append_wait(lines, wait_s=max(0.0, deadline - time.monotonic()))
            written += len(lines)
            if self._on_spooled is not None:
                self._on_spooled()
            after = (rows[-1][0], rows[-1][1], rows[-1][2])
        self._snapshots += 1
        self._snapshot_points += written
        self._last_snapshot_at = time.time()
        return written

    async def _wait_for_spool_share(self, deadline: float) -> None:
        """A snapshot of a large fleet is bigger than the spool (3.3 million lines, about
        330 MB, at 1,000 stores): it writes a page only while the spool's pending part is
        below `SNAPSHOT_SPOOL_SHARE` of its capacity, so the ingestor, whose appends must
        never find the spool full because of a snapshot, always has the rest."""
        limit = self.spool.capacity_bytes * SNAPSHOT_SPOOL_SHARE
        while self.spool.pending_bytes > limit:
            if time.monotonic() >= deadline:
                raise SpoolFull(0, self.spool.pending_bytes, int(limit))
            await asyncio.sleep(0.2)

    async def _snapshot_loop(self) -> None:
        while not self._stopping:
            try:
                written = await self.snapshot()
                log.info("stock levels: snapshot of %d levels spooled", written)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down, spool full for a whole interval
                self._snapshot_failures += 1
                log.error(
                    "stock levels: snapshot incomplete, next in %.0f s: %s: %s",
                    self.snapshot_interval_s,
                    type(exc).__name__,
                    exc,
                )
            await asyncio.sleep(self.snapshot_interval_s)

    # ----------------------------------------------------------------- control

    def start(self) -> None:
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._drain_loop(), name="stock-levels"))
        if self.snapshot_interval_s > 0:
            self._tasks.append(
                asyncio.create_task(self._snapshot_loop(), name="stock-level-snapshots")
            )

    async def stop(self, wait_s: float = 5.0) -> None:
        """Stop snapshots, move what is queued to the spool (at most `wait_s`)."""
        self._stopping = True
        self._wake.set()
        drain = self._tasks[0] if self._tasks else None
        for task in self._tasks[1:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if drain is not None:
            try:
                async with asyncio.timeout(wait_s):
                    await asyncio.shield(drain)
            except (TimeoutError, SpoolFull):
                drain.cancel()
                with contextlib.suppress(asyncio.CancelledError, SpoolFull):
                    await drain
                if self._queue:
                    log.error(
                        "stock levels: %d changes not spooled at shutdown (the next start's "
                        "snapshot writes every level again)",
                        len(self._queue),
                    )
        self._tasks.clear()

    def stats(self) -> StockRecorderStats:
        return StockRecorderStats(
            queued=len(self._queue),
            recorded=self._recorded,
            spooled=self._spooled,
            coalesced=self._coalesced,
            dropped=self._dropped,
            snapshots=self._snapshots,
            snapshot_points=self._snapshot_points,
            snapshot_failures=self._snapshot_failures,
            last_snapshot_at=self._last_snapshot_at,
        )
