"""On SQLite an ingest batch reads (stream positions, dedup marks) before it writes, while
other writers (API requests, the inventory-level webhook sender) commit. The sqlite3 module
opens the batch's transaction at its first write, which waits out the busy timeout for the
lock. Were the reads inside a deferred transaction, SQLite would refuse that first write at
once whenever another writer committed after them ("database is locked": a stale WAL
snapshot), and the batch would fail; this test then fails about one run in three."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy import text

from protocols.messages import Birth
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE, gtin, rfid


async def test_batches_survive_other_writers_committing_meanwhile(tmp_path: Path) -> None:
    harness = StateHarness(f"sqlite+aiosqlite:///{tmp_path}/state.db", {STORE: [NODE]})
    await harness.start()
    try:
        async with harness.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE other_writer (n INTEGER)"))
        await harness.feed(Birth(store=STORE, node=NODE, seq=0, bd_seq=1, version="1"))
        stop = asyncio.Event()
        commits = 0

        async def other_writer() -> None:
            nonlocal commits
            while not stop.is_set():
                async with harness.engine.begin() as connection:
                    await connection.execute(text("INSERT INTO other_writer VALUES (1)"))
                commits += 1
                await asyncio.sleep(0)

        writer = asyncio.create_task(other_writer())
        try:
            for seq in range(1, 401):
                outcome = await harness.feed(rfid(seq, {("shelf-1", gtin(seq % 7)): seq}))
                assert outcome.applied == 1
        finally:
            stop.set()
            await writer
        assert commits > 20  # the other writer really committed while the batches ran
    finally:
        await harness.close()
