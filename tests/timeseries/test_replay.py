"""The replay window: acknowledged lines kept in the spool, and written again by the pump
when the sink may have lost them (an outage, a restart it reports, the pump's own start)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.timeseries import (
    Pump,
    PumpConfig,
    RestartProbe,
    SinkUnavailable,
    Spool,
    SpooledBatch,
    SqlSink,
    create_all,
    history_table,
)


def _lines(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix},store=s v={i}i {1_700_000_000_000_000_000 + i}" for i in range(n)]


def _ack_all(spool: Spool, now: float) -> None:
    batch = spool.peek(1_000_000)
    assert batch is not None
    spool.mark_sent(batch, now=now)


def _all_kept(spool: Spool) -> list[str]:
    lines: list[str] = []
    after = 0
    while (batch := spool.kept(3, after)) is not None:
        lines += batch.lines
        after = batch.last_id
    return lines


# ----------------------------------------------------------------------------- the spool


def test_acknowledged_rows_are_kept_for_the_window_after_the_newest_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", keep_sent_s=60)
    spool.append(_lines(3, "a"))
    _ack_all(spool, now=1_000.0)
    spool.append(_lines(2, "b"))
    _ack_all(spool, now=1_059.0)  # 'a' was acknowledged 59 s before the newest ack: kept
    stats = spool.stats()
    assert (stats.lines, stats.bytes, stats.rows) == (0, 0, 0)  # nothing pending
    assert stats.kept_lines == 5
    assert _all_kept(spool) == _lines(3, "a") + _lines(2, "b")
    assert spool.peek(100) is None  # kept rows are never pending again

    # The window moves only with acknowledgements: an outage ages nothing out.
    spool.append(_lines(1, "c"))
    _ack_all(spool, now=1_061.0)  # 'a' is now 61 s older than the newest ack
    assert _all_kept(spool) == _lines(2, "b") + _lines(1, "c")
    stats = spool.stats()
    assert (stats.kept_rows, stats.kept_lines) == (2, 3)
    assert stats.kept_bytes == sum(len(x) for x in _lines(2, "b") + _lines(1, "c")) + 1


def test_the_kept_bytes_are_bounded_oldest_first(tmp_path: Path) -> None:
    row = len("\n".join(_lines(10, "a")))  # every row below has this size
    spool = Spool(tmp_path / "spool.db", keep_sent_s=3600, keep_sent_bytes=3 * row)
    for name in "abcde":
        spool.append(_lines(10, name))
        _ack_all(spool, now=100.0)
    stats = spool.stats()
    assert stats.kept_bytes == 3 * row  # exactly at the bound: the three newest rows
    assert _all_kept(spool) == _lines(10, "c") + _lines(10, "d") + _lines(10, "e")


def test_a_window_of_zero_deletes_on_acknowledgement(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", keep_sent_s=0)
    spool.append(_lines(4))
    _ack_all(spool, now=5.0)
    stats = spool.stats()
    assert (stats.lines, stats.kept_lines) == (0, 0)
    count = sqlite3.connect(spool.path).execute("SELECT count(*) FROM batch").fetchone()[0]
    assert count == 0


def test_kept_rows_survive_a_reopen_and_an_old_spool_file_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)  # the table as it was before the replay window
    old.execute(
        "CREATE TABLE batch (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, "
        "nlines INTEGER NOT NULL, nbytes INTEGER NOT NULL, payload TEXT NOT NULL)"
    )
    old.execute("INSERT INTO batch (created, nlines, nbytes, payload) VALUES (1, 2, 3, 'x 1\ny 2')")
    old.commit()
    old.close()
    spool = Spool(path)
    assert spool.lines == 2  # an old row is pending
    spool.append(_lines(1))
    _ack_all(spool, now=10.0)
    spool.close()
    reopened = Spool(path)
    stats = reopened.stats()
    assert (stats.lines, stats.kept_lines, stats.kept_rows) == (0, 3, 2)
    assert _all_kept(reopened) == ["x 1", "y 2", *_lines(1)]


def test_refused_lines_leave_the_kept_rows(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_row_lines=2)
    spool.append([*_lines(3), "bad"])  # rows: [m0, m1], [m2, bad]
    batch = spool.peek(10)
    assert batch is not None
    spool.dead_letter(batch, [("bad", "HTTP 400")])
    assert _all_kept(spool) == _lines(3)  # a replay does not send 'bad' again
    stats = spool.stats()
    assert (stats.lines, stats.bytes, stats.kept_lines, stats.dead_letters) == (0, 0, 3, 1)
    assert stats.kept_bytes == sum(len(x) for x in _lines(3)) + 1


# ----------------------------------------------------------------------------- the pump


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")
    await create_all(engine)
    yield engine
    await engine.dispose()


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).select_from(history_table)
        return int((await connection.execute(query)).scalar_one())


async def _forget_everything(engine: AsyncEngine) -> None:
    """What a crashed sink does to what it had acknowledged but not yet flushed."""
    async with engine.begin() as connection:
        await connection.execute(delete(history_table))


async def _until(condition: Callable[[], bool], limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 -- polling the pump's progress is the test
            await asyncio.sleep(0.02)


class _RestartingSink:
    """A real SqlSink that reports a start time the test changes, and can be 'down'."""

    def __init__(self, inner: SqlSink) -> None:
        self.inner = inner
        self.started = 1_000.0
        self.up = True
        self.write_delay_s = 0.0

    async def write(self, lines: list[str]) -> None:
        if not self.up:
            raise SinkUnavailable("connection refused")
        await asyncio.sleep(self.write_delay_s)
        await self.inner.write(lines)

    async def started_at(self) -> float | None:
        if not self.up:
            raise SinkUnavailable("connection refused")
        return self.started

    async def close(self) -> None:
        pass


async def test_a_restart_reported_by_the_probe_replays_the_window(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = _RestartingSink(SqlSink(engine))
    assert isinstance(sink, RestartProbe)
    config = PumpConfig(max_delay_s=0.01, probe_interval_s=0.1)
    pump = Pump(spool, sink, config)
    pump.start()
    spool.append(_lines(30))
    await _until(lambda: spool.kept_lines == 30)
    await asyncio.sleep(0.3)  # a few probes with the same start time: no replay
    assert pump.stats().replays == {}
    assert pump.stats().sink_started_at == 1_000.0

    await _forget_everything(engine)  # the sink restarts between writes and lost them
    sink.started = 2_000.0
    await _until(lambda: pump.stats().replays.get("sink_restarted") == 1)
    assert await _rows(engine) == 30
    stats = pump.stats()
    assert (stats.replayed_lines, stats.sink_started_at, stats.errors) == (30, 2_000.0, {})
    await pump.stop(5)


async def test_an_outage_replays_the_window_before_the_pending_lines(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = _RestartingSink(SqlSink(engine))
    config = PumpConfig(
        max_delay_s=0.01, probe_interval_s=0.1, backoff_initial_s=0.05, backoff_max_s=0.2
    )
    pump = Pump(spool, sink, config)
    pump.start()
    spool.append(_lines(20))
    await _until(lambda: spool.kept_lines == 20)

    sink.up = False
    await _forget_everything(engine)
    await _until(lambda: not pump.stats().sink_up)
    assert pump.problems()[0].startswith("sink down: probe: connection refused")
    spool.append(_lines(5, "late"))  # pending while the sink is down
    await asyncio.sleep(0.3)
    assert spool.lines == 5
    sink.up = True  # the same start time: only the outage tells that it may have lost data
    await _until(lambda: spool.lines == 0)
    assert await _rows(engine) == 25
    stats = pump.stats()
    assert stats.replays == {"outage": 1}
    assert stats.replayed_lines == 20
    assert stats.errors["probe"] >= 1
    assert stats.sink_up
    assert pump.problems() == []
    await pump.stop(5)


async def test_history_stays_degraded_until_the_replay_is_written(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = _RestartingSink(SqlSink(engine))
    config = PumpConfig(max_delay_s=0.01, probe_interval_s=0.1, backoff_initial_s=0.05)
    pump = Pump(spool, sink, config)
    pump.start()
    spool.append(_lines(20))
    await _until(lambda: spool.kept_lines == 20)
    sink.up = False
    await _until(lambda: not pump.stats().sink_up)
    sink.write_delay_s = 1.0
    sink.up = True
    await _until(lambda: pump.stats().sink_up)  # it answers its probe: the replay is writing
    assert pump.problems() == ["writing 20 acknowledged lines again (outage)"]
    await _until(lambda: pump.stats().replays == {"outage": 1})
    assert pump.problems() == []
    await pump.stop(5)


async def test_a_pump_start_replays_what_the_spool_kept(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    pump = Pump(spool, SqlSink(engine), PumpConfig(max_delay_s=0.01))
    spool.append(_lines(12))
    pump.start()
    assert await pump.stop(5)
    spool.close()
    await _forget_everything(engine)  # the sink and the cloud went down together

    reopened = Spool(tmp_path / "spool.db")
    pump = Pump(reopened, SqlSink(engine), PumpConfig(max_delay_s=0.01))
    pump.start()
    await _until(lambda: pump.stats().replays == {"pump_start": 1})
    assert await _rows(engine) == 12
    await pump.stop(5)


async def test_problems_name_a_lagging_or_filling_spool(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db", capacity_bytes=1_000)
    pump = Pump(spool, SqlSink(engine), PumpConfig(degraded_lag_s=0.2, degraded_fill=0.5))
    assert pump.problems() == []
    spool.append(_lines(6))  # about 230 bytes: under half
    await asyncio.sleep(0.3)
    [lag] = pump.problems()
    assert lag.startswith("6 lines pending, the oldest")
    spool.append(_lines(10, "n"))
    assert any("spool" in p and "of 1000 bytes full" in p for p in pump.problems())


def test_only_the_oldest_pending_rows_can_be_marked_sent(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_row_lines=1)
    spool.append(_lines(4))  # rows 1..4
    first = spool.peek(1)
    assert first is not None
    spool.delete_through(first)  # a gap below the next pending row is fine
    second = spool.peek(1)
    assert second is not None
    spool.mark_sent(second, now=1.0)
    spool.mark_sent(second, now=2.0)  # twice: a no-op
    last = spool.peek(10)
    assert last is not None
    assert last.lines == _lines(4)[2:]
    with pytest.raises(ValueError, match="not the oldest pending"):
        spool.mark_sent(SpooledBatch(last.last_id, last.last_id, [], 0), now=3.0)
    assert (spool.lines, spool.kept_lines) == (2, 1)


def test_delete_through_forgets_pending_rows_only(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_row_lines=2)
    spool.append(_lines(4))  # rows of 2 lines
    sent = spool.peek(2)
    assert sent is not None
    spool.mark_sent(sent, now=1.0)
    both = SpooledBatch(sent.first_id, sent.last_id + 1, [], 0)
    spool.delete_through(both)  # the kept row stays for the replay
    assert (spool.lines, spool.kept_lines) == (0, 2)
    assert _all_kept(spool) == _lines(2)
    spool.close()
    reopened = Spool(tmp_path / "spool.db")
    assert (reopened.lines, reopened.kept_lines) == (0, 2)
