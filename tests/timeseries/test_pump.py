from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.timeseries import Pump, PumpConfig, Spool, SqlSink, create_all, history_table


def _lines(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix},store=s v={i}i {1_700_000_000_000_000_000 + i}" for i in range(n)]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")
    await create_all(engine)
    yield engine
    await engine.dispose()


async def _rows(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            (await connection.execute(select(func.count()).select_from(history_table))).scalar_one()
        )


async def _until(condition: Callable[[], bool], limit_s: float = 20.0) -> None:
    async with asyncio.timeout(limit_s):
        while not condition():  # noqa: ASYNC110 -- polling the pump's progress is the test
            await asyncio.sleep(0.02)


async def test_small_batches_wait_for_their_age_then_are_written(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    pump = Pump(spool, SqlSink(engine), PumpConfig(batch_lines=1_000, max_delay_s=0.5))
    pump.start()
    spool.append(_lines(10))
    await asyncio.sleep(0.15)
    assert await _rows(engine) == 0  # younger than max_delay_s and smaller than a batch
    await _until(lambda: spool.lines == 0)
    assert await _rows(engine) == 10
    assert await pump.stop(5)
    stats = pump.stats()
    assert (stats.written_lines, stats.written_batches, stats.pending_lines) == (10, 1, 0)


async def test_full_batches_go_at_once_and_stop_flushes(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db", max_row_lines=100)
    pump = Pump(spool, SqlSink(engine), PumpConfig(batch_lines=300, max_delay_s=60))
    pump.start()
    spool.append(_lines(650))
    pump.notify()
    await _until(lambda: spool.lines == 50)  # two full batches went; 50 wait for their age
    assert await pump.stop(10)  # ... and shutdown flushes them
    assert await _rows(engine) == 650
    assert pump.stats().max_batch_lines == 300


async def test_rejected_batches_are_dead_lettered_and_the_rest_flows(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    pump = Pump(spool, SqlSink(engine), PumpConfig(batch_lines=5, max_delay_s=0.05))
    spool.append([*_lines(2), "garbage line", *_lines(2, "n")])
    spool.append(_lines(3, "x"))
    pump.start()
    await _until(lambda: spool.lines == 0)
    await pump.stop(5)
    assert await _rows(engine) == 7  # the good lines around the bad one were written
    stats = pump.stats()
    assert (stats.rejected_lines, stats.written_lines) == (1, 7)
    assert stats.last_error is not None
    assert "rejected" in stats.last_error
    [(line, reason)] = spool.dead_letters()
    assert line == "garbage line"
    assert "bad field" in reason


class _FlakySink:
    """A real SqlSink behind a switch: the history database is 'down' while off."""

    def __init__(self, inner: SqlSink) -> None:
        self.inner, self.up, self.calls = inner, False, 0

    async def write(self, lines: list[str]) -> None:
        from cloud.timeseries import SinkUnavailable

        self.calls += 1
        if not self.up:
            raise SinkUnavailable("history database down")
        await self.inner.write(lines)

    async def close(self) -> None:
        pass


async def test_backoff_is_capped_and_nothing_is_deleted_while_the_sink_is_down(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = _FlakySink(SqlSink(engine))
    config = PumpConfig(batch_lines=10, max_delay_s=0.01, backoff_initial_s=0.05, backoff_max_s=0.2)
    pump = Pump(spool, sink, config)
    spool.append(_lines(25))
    pump.start()
    await asyncio.sleep(1.2)
    for _ in range(20):  # appends wake the pump but do not shorten its backoff
        spool.append(_lines(1, "more"))
        pump.notify()
    # 0.05 + 0.1 + 0.2 + 0.2 ...: about 7 attempts in 1.2 s, not hundreds.
    assert 3 <= sink.calls <= 12
    stats = pump.stats()
    assert not stats.sink_up
    assert stats.last_error == "SinkUnavailable: history database down"
    assert stats.pending_lines == 45
    assert stats.lag_s > 1.0
    sink.up = True
    await _until(lambda: spool.lines == 0)
    assert await pump.stop(5)
    assert await _rows(engine) == 26  # 25 distinct + 20 identical 'more' lines -> 1
    assert pump.stats().sink_up


async def test_stop_with_the_sink_down_keeps_the_lines_for_the_next_start(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = _FlakySink(SqlSink(engine))
    pump = Pump(spool, sink, PumpConfig(max_delay_s=0.01, backoff_initial_s=0.05))
    spool.append(_lines(7))
    pump.start()
    assert not await pump.stop(0.5)  # bounded wait, then give up
    spool.close()
    reopened = Spool(tmp_path / "spool.db")
    sink.up = True
    pump = Pump(reopened, sink, PumpConfig(max_delay_s=0.01))
    pump.start()
    assert await pump.stop(5)
    assert await _rows(engine) == 7


async def test_open_pump_uses_the_sql_history_without_influxdb(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    from cloud.timeseries import SqlSink, open_pump, points_for
    from tests.samples import all_samples

    spool = Spool(tmp_path / "spool")
    pump = open_pump(spool, engine=engine, config=PumpConfig(max_delay_s=0.01))
    assert isinstance(pump.sink, SqlSink)
    for message in all_samples():  # as the ingestor does: points straight into the spool
        spool.append(points_for(message))
    pump.start()
    assert await pump.stop(10)
    assert await _rows(engine) > 10
    with pytest.raises(ValueError, match="needs an InfluxDB"):
        open_pump(spool)
