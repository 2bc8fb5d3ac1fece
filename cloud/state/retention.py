"""Rows that only record the past expire by policy (`retention:` in the cloud config).

- `dead_letters`: rejected messages, kept `dead_letters_days` (30) after they arrived;
- `history`: the SQL time-series table (used when no InfluxDB is configured), points kept
  `history_days` (90). InfluxDB and VictoriaMetrics keep their own retention policy.

`RetentionTask` runs a pass every `interval_s` (1 h) in the cloud runtime and once at start.
A pass deletes at most `batch_rows` rows per statement, in a transaction each, until none
is older than the cutoff: a long backlog (a first pass on an old database) never holds one
long write lock over the ingestor. Each pass logs what it deleted and counts it in
`storegate_rows_expired_total{table}`; a failed pass is logged and retried next interval.
A row is kept while it is younger than the cutoff: exactly `days` old goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.state import schema
from cloud.state.db import writing
from cloud.timeseries.sql import history_table
from protocols.messages import utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    dead_letters_days: float
    history_days: float
    batch_rows: int = 10_000


async def _delete_dead_letters(engine: AsyncEngine, cutoff: datetime, batch_rows: int) -> int:
    t = schema.dead_letters
    removed = 0
    while True:
        oldest = select(t.c.id).where(t.c.received_at <= cutoff).limit(batch_rows)
        async with writing(engine) as connection:
            result = await connection.execute(delete(t).where(t.c.id.in_(oldest.scalar_subquery())))
        removed += result.rowcount
        if result.rowcount < batch_rows:
            return removed


async def _delete_history(engine: AsyncEngine, cutoff: datetime, batch_rows: int) -> int:
    t = history_table
    cutoff_ns = int(cutoff.timestamp() * 1_000_000) * 1_000
    removed = 0
    while True:
        # The oldest batch's newest timestamp bounds one DELETE (the key has no single id).
        async with writing(engine) as connection:
            times = (
                (
                    await connection.execute(
                        select(t.c.time_ns)
                        .where(t.c.time_ns <= cutoff_ns)
                        .order_by(t.c.time_ns)
                        .limit(batch_rows)
                    )
                )
                .scalars()
                .all()
            )
            if not times:
                return removed
            result = await connection.execute(delete(t).where(t.c.time_ns <= times[-1]))
        removed += result.rowcount
        if len(times) < batch_rows:
            return removed


async def expire(
    engine: AsyncEngine, policy: RetentionPolicy, now: datetime | None = None
) -> dict[str, int]:
    """Delete what the policy no longer keeps; rows deleted per table."""
    now = utc_now() if now is None else now
    return {
        "dead_letters": await _delete_dead_letters(
            engine, now - timedelta(days=policy.dead_letters_days), policy.batch_rows
        ),
        "history": await _delete_history(
            engine, now - timedelta(days=policy.history_days), policy.batch_rows
        ),
    }


class RetentionTask:
    """`expire` once at start and then every `interval_s`, for the cloud runtime."""

    def __init__(
        self,
        engine: AsyncEngine,
        policy: RetentionPolicy,
        interval_s: float,
        on_expired: Callable[[str, int], None] = lambda _table, _rows: None,
    ) -> None:
        self.engine = engine
        self.policy = policy
        self.interval_s = interval_s
        self.on_expired = on_expired
        self.passes = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> dict[str, int]:
        removed = await expire(self.engine, self.policy)
        for table, rows in removed.items():
            self.on_expired(table, rows)
        self.passes += 1
        if any(removed.values()):
            log.info(
                "retention: deleted %s (dead letters older than %g days, history older than"
                " %g days)",
                ", ".join(f"{rows} {table}" for table, rows in removed.items()),
                self.policy.dead_letters_days,
                self.policy.history_days,
            )
        return removed

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a database outage: the next pass tries again
                log.exception("retention pass failed; next try in %g s", self.interval_s)
            await asyncio.sleep(self.interval_s)
