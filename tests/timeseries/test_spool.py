from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from cloud.timeseries import Point, Spool, SpoolFull


def _lines(n: int, prefix: str = "m") -> list[str]:
    return [f"{prefix},store=s v={i}i {1_700_000_000_000_000_000 + i}" for i in range(n)]


def test_append_is_durable_and_survives_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.append(_lines(3))
    spool.append(_lines(2, "x"))
    spool.close()  # as after a crash: nothing but the file is left

    reopened = Spool(tmp_path / "spool.db")
    stats = reopened.stats()
    assert (stats.rows, stats.lines) == (2, 5)
    assert stats.bytes == sum(len(line) for line in _lines(3) + _lines(2, "x")) + 2 + 1
    batch = reopened.peek(100)
    assert batch is not None
    assert batch.lines == _lines(3) + _lines(2, "x")


def test_peek_respects_the_line_budget_and_delete_only_what_was_read(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_row_lines=10)
    spool.append(_lines(25))  # three rows: 10, 10, 5
    assert spool.stats().rows == 3
    batch = spool.peek(15)
    assert batch is not None
    assert batch.lines == _lines(25)[:10]  # the next row would exceed 15
    spool.append(_lines(1, "late"))
    spool.delete_through(batch)
    rest = spool.peek(1_000)
    assert rest is not None
    assert rest.lines == _lines(25)[10:] + _lines(1, "late")
    assert spool.lines == 16


def test_one_row_larger_than_the_budget_is_still_returned(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_row_lines=50)
    spool.append(_lines(50))
    batch = spool.peek(5)
    assert batch is not None
    assert len(batch.lines) == 50


def test_full_spool_raises_and_keeps_everything(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", capacity_bytes=2_000)
    accepted: list[str] = []
    with pytest.raises(SpoolFull, match="spool full") as info:  # noqa: PT012
        for i in range(1_000):
            lines = _lines(2, f"m{i}")
            spool.append(lines)
            accepted += lines
    assert info.value.capacity == 2_000
    assert spool.stats().bytes <= 2_000
    batch = spool.peek(10_000)
    assert batch is not None
    assert batch.lines == accepted  # nothing dropped, nothing half-written
    # The file agrees with the counters (the refused append left no row behind).
    rows = (
        sqlite3.connect(tmp_path / "spool.db").execute("SELECT sum(nlines) FROM batch").fetchone()
    )
    assert rows[0] == len(accepted)


def test_a_batch_larger_than_the_whole_spool_is_a_clear_error(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", capacity_bytes=100)
    with pytest.raises(ValueError, match="can never fit"):
        spool.append(_lines(10))


async def test_append_wait_waits_for_the_pump_to_make_room(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", capacity_bytes=500)
    spool.append(_lines(8))
    with pytest.raises(SpoolFull):
        await spool.append_wait(_lines(8, "n"), wait_s=0.2)

    async def drain_later() -> None:
        await asyncio.sleep(0.3)
        batch = spool.peek(100)
        assert batch is not None
        spool.delete_through(batch)

    drainer = asyncio.create_task(drain_later())
    await spool.append_wait(_lines(8, "n"), wait_s=10)
    await drainer
    batch = spool.peek(100)
    assert batch is not None
    assert batch.lines == _lines(8, "n")


def test_stats_report_oldest_age_and_dead_letters(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    assert spool.stats().oldest_age_s is None
    spool.append(_lines(2))
    age = spool.stats().oldest_age_s
    assert age is not None
    assert age >= 0
    batch = spool.peek(10)
    assert batch is not None
    spool.dead_letter(batch, [(batch.lines[1], "HTTP 400: bad timestamp")])
    stats = spool.stats()
    assert (stats.lines, stats.bytes, stats.dead_letters) == (0, 0, 1)
    assert spool.dead_letters() == [(_lines(2)[1], "HTTP 400: bad timestamp")]


def test_a_path_without_suffix_is_a_directory_for_the_spool(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "storegate-spool")  # like the cloud's `ingest.spool_dir` setting
    spool.append(_lines(1))
    assert spool.path == tmp_path / "storegate-spool" / "timeseries-spool.db"
    assert spool.path.exists()


def test_points_are_encoded_and_unencodable_ones_dead_lettered(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    good = Point("m", {"store": "s"}, {"v": 1}, 5)
    bad = Point("m", {"store": "back\\slash"}, {"v": 1}, 6)
    spool.append([good, bad, "raw,store=s v=2i 7"])
    batch = spool.peek(10)
    assert batch is not None
    assert batch.lines == ["m,store=s v=1i 5", "raw,store=s v=2i 7"]
    [(payload, reason)] = spool.dead_letters()
    assert "back\\\\slash" in payload
    assert "backslash" in reason
