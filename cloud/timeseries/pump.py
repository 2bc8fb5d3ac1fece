"""Drains the spool into a sink: batches by size and age, retries with capped backoff,
and writes the last acknowledged window again when the sink may have lost it.

A batch leaves the pending part of the spool only after the sink accepted it, so a crash or
an outage at any point loses nothing (a batch written but not yet marked is written again on
restart, which is harmless: points are idempotent). While the sink is down the backlog stays
on disk; the pump holds at most one batch (`batch_lines` lines, plus one spool row) in memory.

A sink's acknowledgement is not always durable (VictoriaMetrics keeps acknowledged writes in
memory for seconds; a SIGKILL loses them), so the spool keeps acknowledged rows for a window
and the pump *replays* them -- before any pending row -- when the sink may have lost them:

- `outage`: a write or a probe failed; the replay is the first write after it;
- `sink_restarted`: the sink's start time (`RestartProbe`, probed every `probe_interval_s`)
  changed although no write failed (a restart between two writes);
- `pump_start`: the pump cannot know what happened to the sink while it was not running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from cloud.timeseries.sinks import LineSink, RestartProbe, SinkRejected, SinkUnavailable
from cloud.timeseries.spool import Spool, SpooledBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PumpConfig:
    batch_lines: int = 5_000
    max_delay_s: float = 1.0  # a smaller batch is written once its oldest line is this old
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    poll_s: float = 0.05
    shutdown_timeout_s: float = 10.0
    probe_interval_s: float = 5.0  # how often to ask a `RestartProbe` sink its start time
    degraded_lag_s: float = 60.0  # pending lines older than this make the pump degraded
    degraded_fill: float = 0.8  # ... and so does a spool this full (fraction of capacity)


@dataclass(frozen=True, slots=True)
class PumpStats:
    written_lines: int
    written_batches: int
    retries: int  # failed contacts (writes and probes), each followed by a wait
    rejected_lines: int  # refused by the sink for good, kept in the spool's dead_letter
    last_error: str | None
    last_error_at: float | None
    last_write_at: float | None
    sink_up: bool
    pending_lines: int
    lag_s: float  # age of the oldest line still waiting, 0 when the spool is empty
    max_batch_lines: int  # the largest batch held in memory so far
    errors: dict[str, int]  # by kind: unavailable (write), rejected (lines), probe
    replays: dict[str, int]  # completed replays by reason: outage, sink_restarted, pump_start
    replayed_lines: int
    replay_pending: str | None  # the reason of a replay not yet done
    sink_started_at: float | None  # the sink's own start time, when it tells (RestartProbe)


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
        self._errors: dict[str, int] = {}
        self._replays: dict[str, int] = {}
        self._replayed_lines = 0
        self._replay_reason: str | None = None
        self._sink_started_at: float | None = None
        self._probe_sink = sink if isinstance(sink, RestartProbe) else None
        self._next_probe = 0.0  # monotonic
        self._down_by_probe = False  # only a probe failed: a probe that answers ends it

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
        if self.spool.kept_lines:
            self._request_replay("pump_start")
        while True:
            pending = self.spool.lines
            if self._stopping and pending == 0:
                return  # a replay still due is done after the next start (pump_start)
            if not self._stopping and self._replay_reason is None:
                await self._probe_if_due()  # a due replay probes first itself
            if self._replay_reason is not None and not self._stopping:
                if await self._replay():
                    backoff = config.backoff_initial_s
                else:
                    await self._backoff(backoff)
                    backoff = min(backoff * 2, config.backoff_max_s)
                continue
            if pending == 0:
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
        rejected = await self._write_batch(batch)
        if rejected is None:
            return False
        if rejected:
            log.error("time-series sink rejected %d lines: %s", len(rejected), rejected[0][1])
            self._rejected += len(rejected)
            self._count_error("rejected", len(rejected))
            self._note_error(f"rejected: {rejected[0][1]}")
            await asyncio.to_thread(self.spool.dead_letter, batch, rejected)
        else:
            await asyncio.to_thread(self.spool.mark_sent, batch)
        self._written_lines += len(batch.lines) - len(rejected)
        self._written_batches += 1
        self._last_write_at = time.time()
        return True

    async def _write_batch(self, batch: SpooledBatch) -> list[tuple[str, str]] | None:
        """Write `batch`: the lines the sink refused, or None when it is unavailable."""
        try:
            rejected = await self._write_isolating_rejects(batch.lines)
        except Exception as exc:  # SinkUnavailable, or a sink bug: never lose the batch
            self._retries += 1
            self._count_error("unavailable")
            self._down_by_probe = False
            self._sink_down(f"{type(exc).__name__}: {exc}")
            return None
        self._sink_up, self._down_by_probe = True, False
        return rejected

    def _sink_down(self, message: str) -> None:
        """The sink may have lost what it acknowledged: replay once it answers again."""
        if self._sink_up:
            log.warning(
                "time-series sink down (%d lines pending, %d kept for replay): %s",
                self.spool.lines,
                self.spool.kept_lines,
                message,
            )
        self._sink_up = False
        self._note_error(message)
        self._request_replay("outage")

    def _request_replay(self, reason: str) -> None:
        if self._replay_reason is None and self.spool.kept_lines:
            self._replay_reason = reason

    async def _replay(self) -> bool:
        """Write the kept (acknowledged) rows again, oldest first, batch by batch.
        False when the sink is unavailable: the replay stays due and starts over."""
        reason, after_id, lines = self._replay_reason, 0, 0
        assert reason is not None
        # Learn the (new) start time first, so the next probe does not replay again.
        if self._probe_sink is not None and not await self._probe():
            return False
        while True:
            batch = await asyncio.to_thread(self.spool.kept, self.config.batch_lines, after_id)
            if batch is None:
                break
            rejected = await self._write_batch(batch)
            if rejected is None:
                return False
            if rejected:  # accepted before; refused now (a changed schema?): skip them
                log.error(
                    "time-series sink refused %d replayed lines: %s",
                    len(rejected),
                    rejected[0][1],
                )
                self._count_error("rejected", len(rejected))
            after_id, lines = batch.last_id, lines + len(batch.lines)
        self._replay_reason = None
        self._replays[reason] = self._replays.get(reason, 0) + 1
        self._replayed_lines += lines
        log.warning(
            "time-series: replayed %d acknowledged lines (%s): the sink may have lost them",
            lines,
            reason,
        )
        return True

    async def _probe_if_due(self) -> None:
        if self._probe_sink is not None and time.monotonic() >= self._next_probe:
            await self._probe()

    async def _probe(self) -> bool:
        """Ask the sink its start time; a new one means it restarted and may have lost what it
        had acknowledged. A sink that does not tell (None) is left to the write errors.
        False when the sink did not answer."""
        assert self._probe_sink is not None
        self._next_probe = time.monotonic() + self.config.probe_interval_s
        try:
            started = await self._probe_sink.started_at()
        except SinkUnavailable as exc:
            self._retries += 1
            self._count_error("probe")
            self._sink_down(f"probe: {exc}")
            self._down_by_probe = True
            return False
        if self._down_by_probe:  # a write failure is only cleared by a write
            self._sink_up, self._down_by_probe = True, False
        if started is None:
            return True
        previous, self._sink_started_at = self._sink_started_at, started
        restarted = previous is not None and abs(started - previous) >= 1.0
        if restarted and self._replay_reason is None:  # else a replay is due already
            log.warning(
                "time-series sink restarted (started at %.0f, was %.0f): replaying the "
                "acknowledged window",
                started,
                previous,
            )
            self._request_replay("sink_restarted")
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

    def _count_error(self, kind: str, n: int = 1) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + n

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
            errors=dict(self._errors),
            replays=dict(self._replays),
            replayed_lines=self._replayed_lines,
            replay_pending=self._replay_reason,
            sink_started_at=self._sink_started_at,
        )

    def problems(self) -> list[str]:
        """Why history is degraded right now (empty when it is not), for `/readyz`. Does a
        small SQLite read: call it from a worker thread in async code."""
        spool = self.spool.stats()
        found = []
        if not self._sink_up:
            found.append(f"sink down: {self._last_error or 'no answer'}")
        elif self._replay_reason is not None:
            found.append(
                f"writing {spool.kept_lines} acknowledged lines again ({self._replay_reason})"
            )
        lag = spool.oldest_age_s or 0.0
        if lag > self.config.degraded_lag_s:
            found.append(f"{spool.lines} lines pending, the oldest {lag:.0f} s old")
        if spool.bytes >= self.config.degraded_fill * spool.capacity_bytes:
            found.append(f"spool {spool.bytes} of {spool.capacity_bytes} bytes full")
        return found
