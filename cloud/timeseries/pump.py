"""Drains the spool into a sink: batches by size and age, retries with capped backoff.

A batch is deleted from the spool only after the sink accepted it, so a crash or an outage
at any point loses nothing (a batch written but not yet deleted is written again on restart,
which is harmless: points are idempotent). While the sink is down the backlog stays on disk;
the pump holds at most one batch (`batch_lines` lines, plus one spool row) in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from cloud.timeseries.sinks import LineSink, SinkRejected
from cloud.timeseries.spool import Spool

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PumpConfig:
    batch_lines: int = 5_000
    max_delay_s: float = 1.0  # a smaller batch is written once its oldest line is this old
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    poll_s: float = 0.05
    shutdown_timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class PumpStats:
    written_lines: int
    written_batches: int
    retries: int
    rejected_lines: int  # refused by the sink for good, kept in the spool's dead_letter
    last_error: str | None
    last_error_at: float | None
    last_write_at: float | None
    sink_up: bool
    pending_lines: int
    lag_s: float  # age of the oldest line still waiting, 0 when the spool is empty
    max_batch_lines: int  # the largest batch held in memory so far


class Pump:
    def __init__(self, spool: Spool, sink: LineSink, config: PumpConfig | None = None) -> None:
        self.spool = spool
        self.sink = sink
        self.config = config or PumpConfig()
        self._wake = asyncio.Event()  # notify(): new lines
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._written_lines = self._written_batches = self._retries = self._rejected = 0
        self._max_batch_lines = 0
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_write_at: float | None = None
        self._sink_up = True

    # ----------------------------------------------------------------------- control

    def start(self) -> asyncio.Task[None]:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="timeseries-pump")
        return self._task

    def notify(self) -> None:
        """Wake the pump (e.g. after an append) instead of waiting for its next poll."""
        self._wake.set()

    async def stop(self, wait_s: float | None = None) -> bool:
        """Flush what the spool holds, waiting at most `wait_s`; True if it is empty.

        Whatever is left stays in the spool on disk and is written after the next start.
        """
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        task, wait = self._task, wait_s if wait_s is not None else self.config.shutdown_timeout_s
        if task is not None:
            try:
                async with asyncio.timeout(wait):
                    await asyncio.shield(task)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return self.spool.lines == 0

    # ----------------------------------------------------------------------- loop

    async def run(self) -> None:
        config = self.config
        backoff = config.backoff_initial_s
        while True:
            pending = self.spool.lines
            if pending == 0:
                if self._stopping:
                    return
                await self._sleep(config.poll_s)
                continue
            if pending < config.batch_lines and not self._stopping:
                age = await asyncio.to_thread(self.spool.oldest_age_s) or 0.0
                if age < config.max_delay_s:
                    await self._sleep(min(config.poll_s, config.max_delay_s - age))
                    continue
            if await self._write_one():
                backoff = config.backoff_initial_s
            else:
                await self._backoff(backoff)
                backoff = min(backoff * 2, config.backoff_max_s)

    async def _write_one(self) -> bool:
        """Write the oldest batch; False if the sink is unavailable (retry later)."""
        batch = await asyncio.to_thread(self.spool.peek, self.config.batch_lines)
        if batch is None:
            return True
        self._max_batch_lines = max(self._max_batch_lines, len(batch.lines))
        try:
            rejected = await self._write_isolating_rejects(batch.lines)
        except Exception as exc:  # SinkUnavailable, or a sink bug: never lose the batch
            self._retries += 1
            self._sink_up = False
            self._note_error(f"{type(exc).__name__}: {exc}")
            log.warning(
                "time-series sink unavailable (%d lines waiting): %s", self.spool.lines, exc
            )
            return False
        if rejected:
            log.error("time-series sink rejected %d lines: %s", len(rejected), rejected[0][1])
            self._rejected += len(rejected)
            self._note_error(f"rejected: {rejected[0][1]}")
            await asyncio.to_thread(self.spool.dead_letter, batch, rejected)
        else:
            await asyncio.to_thread(self.spool.delete_through, batch)
        self._sink_up = True
        self._written_lines += len(batch.lines) - len(rejected)
        self._written_batches += 1
        self._last_write_at = time.time()
        return True

    async def _write_isolating_rejects(self, lines: list[str]) -> list[tuple[str, str]]:
        """Write `lines`; when the sink refuses the data, bisect to find the bad lines so the
        good ones still get written. Returns the refused lines with their reasons. Halves
        written twice are harmless: points are idempotent."""
        try:
            await self.sink.write(lines)
            return []
        except SinkRejected as exc:
            if len(lines) == 1:
                return [(lines[0], str(exc))]
        middle = len(lines) // 2
        return [
            *await self._write_isolating_rejects(lines[:middle]),
            *await self._write_isolating_rejects(lines[middle:]),
        ]

    async def _sleep(self, seconds: float) -> None:
        """Wait for new lines (notify), a stop, or `seconds`."""
        if self._stopping:
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, seconds)):
                await self._wake.wait()

    async def _backoff(self, seconds: float) -> None:
        """Wait before retrying a down sink. New lines do not shorten it; a stop does, once
        (one last flush attempt), after which `stop`'s own deadline bounds the retries."""
        if self._stopping:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()

    def _note_error(self, message: str) -> None:
        self._last_error = message[:500]
        self._last_error_at = time.time()

    # ----------------------------------------------------------------------- stats

    def stats(self) -> PumpStats:
        return PumpStats(
            written_lines=self._written_lines,
            written_batches=self._written_batches,
            retries=self._retries,
            rejected_lines=self._rejected,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            last_write_at=self._last_write_at,
            sink_up=self._sink_up,
            pending_lines=self.spool.lines,
            lag_s=self.spool.oldest_age_s() or 0.0,
            max_batch_lines=self._max_batch_lines,
        )
