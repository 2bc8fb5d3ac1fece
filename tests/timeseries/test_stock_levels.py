"""The stock-level recorder's queue policy and snapshots, on a real spool and a real SQLite
state store (the servers behind the spool are covered by test_influx_real_path.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.state import schema
from cloud.state.db import create_engine, migrate
from cloud.timeseries import Spool, SpoolFull, parse
from cloud.timeseries.stock import StockLevel, StockRecorder

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
STORE, GTIN = "store-042", "80614141123458"


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    opened = Spool(tmp_path / "spool.db", keep_sent_s=0)
    yield opened
    opened.close()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    opened = create_engine(f"sqlite+aiosqlite:///{tmp_path}/state.db")
    await migrate(opened)
    yield opened
    await opened.dispose()


def level(shelf: str, count: int, seconds: int = 0) -> StockLevel:
    return StockLevel(STORE, shelf, GTIN, count, T0 + timedelta(seconds=seconds))


def spooled(spool: Spool) -> list[tuple[str, int, bool, int]]:
    """(shelf, count, snapshot, time_ns) of every pending line, in spool order."""
    batch = spool.peek(1_000_000)
    points = [parse(line) for line in (batch.lines if batch else [])]
    return [
        (p.tags["shelf"], int(p.fields["count"]), bool(p.fields["snapshot"]), p.time_ns)
        for p in points
    ]


def ns(seconds: int) -> int:
    return int((T0 + timedelta(seconds=seconds)).timestamp()) * 1_000_000_000


async def test_below_the_bound_every_change_reaches_the_spool_in_order(
    spool: Spool, engine: AsyncEngine
) -> None:
    recorder = StockRecorder(spool, engine, queue_points=100, batch_points=4)
    recorder.record([level("s1", 10 - i, seconds=i) for i in range(10)])
    while recorder.stats().queued:
        assert await recorder.flush_once()
    assert spooled(spool) == [("s1", 10 - i, False, ns(i)) for i in range(10)]
    stats = recorder.stats()
    assert (stats.recorded, stats.spooled, stats.coalesced, stats.dropped) == (10, 10, 0, 0)


async def test_at_the_bound_a_change_replaces_its_series_queued_change_or_is_dropped(
    spool: Spool, engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = StockRecorder(spool, engine, queue_points=3)
    with caplog.at_level(logging.WARNING, logger="cloud.timeseries.stock"):
        recorder.record([level("a", 1), level("b", 1), level("c", 1)])  # the bound
        recorder.record([level("a", 2, seconds=5)])  # a is queued: replaced in place
        recorder.record([level("d", 1, seconds=5)])  # nothing of d queued: dropped
    stats = recorder.stats()
    assert (stats.queued, stats.coalesced, stats.dropped) == (3, 1, 1)
    assert [r.message for r in caplog.records].count(
        "stock levels: 3 changes queued for the time-series spool (the bound): changes are "
        "coalesced per shelf and GTIN or dropped until it drains; the next snapshot writes "
        "every level again"
    ) == 1  # once per episode, not per change
    assert await recorder.flush_once()
    # a's latest level (not its first) is what the series keeps, at its own time.
    assert spooled(spool) == [
        ("a", 2, False, ns(5)),
        ("b", 1, False, ns(0)),
        ("c", 1, False, ns(0)),
    ]


async def test_a_full_spool_keeps_the_changes_queued_in_order_until_it_has_room(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    small = Spool(tmp_path / "small.db", capacity_bytes=800, keep_sent_s=0)
    try:
        filler = [f"filler,store={STORE} n={i}i {i:03d}" for i in range(20)]
        small.append(filler)  # ~650 bytes: the next 3 lines (~100 bytes each) do not fit
        recorder = StockRecorder(small, engine, queue_points=10, retry_s=0.01)
        recorder.record([level("s1", 3), level("s1", 2, seconds=1), level("s1", 1, seconds=2)])
        assert not await recorder.flush_once()
        assert recorder.stats().queued == 3  # nothing lost, still in order
        recorder.record([level("s1", 0, seconds=3)])
        batch = small.peek(100)
        assert batch is not None
        small.mark_sent(batch)  # the pump wrote the filler: room again
        assert await recorder.flush_once()
        assert [count for _, count, _, _ in spooled(small)] == [3, 2, 1, 0]
    finally:
        small.close()


async def test_a_snapshot_writes_every_inventory_row_page_by_page(
    spool: Spool, engine: AsyncEngine
) -> None:
    rows = [
        {
            "store_id": store,
            "shelf": f"shelf-{i}",
            "gtin": GTIN,
            "node_id": "pi-1",
            "count": i,
            "updated_at": T0,
        }
        for store in (STORE, "store-007")
        for i in range(4)
    ]
    async with engine.begin() as connection:
        await connection.execute(schema.inventory.insert(), rows)
    recorder = StockRecorder(spool, engine, page_rows=3, snapshot_interval_s=60)
    before = datetime.now(UTC)
    assert await recorder.snapshot() == 8
    batch = spool.peek(1_000)
    assert batch is not None
    points = [parse(line) for line in batch.lines]
    assert sorted((p.tags["store"], p.tags["shelf"], p.fields["count"]) for p in points) == sorted(
        (r["store_id"], r["shelf"], r["count"]) for r in rows
    )
    assert all(p.fields["snapshot"] is True for p in points)
    assert all(p.time_ns >= int(before.timestamp() * 1e9) - 1_000_000 for p in points)
    stats = recorder.stats()
    assert (stats.snapshots, stats.snapshot_points) == (1, 8)


async def test_stop_moves_what_is_queued_into_the_spool(spool: Spool, engine: AsyncEngine) -> None:
    recorder = StockRecorder(spool, engine, snapshot_interval_s=0)
    recorder.start()
    recorder.record([level(f"s{i}", i) for i in range(50)])
    await recorder.stop()
    assert len(spooled(spool)) == 50
    assert recorder.stats().queued == 0


async def test_a_snapshot_leaves_half_the_spool_to_the_ingestor(
    tmp_path: Path, engine: AsyncEngine
) -> None:
    async with engine.begin() as connection:
        await connection.execute(
            schema.inventory.insert(),
            [
                {"store_id": STORE, "shelf": f"s{i}", "gtin": GTIN, "node_id": "pi-1",
                 "count": i, "updated_at": T0}
                for i in range(3)
            ],
        )  # fmt: skip
    small = Spool(tmp_path / "small.db", capacity_bytes=2_000, keep_sent_s=0)
    try:
        small.append([f"filler,store={STORE} n={i}i {i:04d}" for i in range(40)])  # > 1,000 B
        recorder = StockRecorder(small, engine, snapshot_interval_s=1)
        with pytest.raises(SpoolFull):  # still over half full when its interval is over
            await recorder.snapshot()
        assert small.lines == 40  # the ingestor's half was never used

        snapshot = asyncio.create_task(recorder.snapshot())
        await asyncio.sleep(0.3)
        assert small.lines == 40  # waiting, not writing
        batch = small.peek(100)
        assert batch is not None
        small.mark_sent(batch)  # the pump drained the spool
        assert await snapshot == 3
        assert small.lines == 3
    finally:
        small.close()
