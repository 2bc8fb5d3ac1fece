"""Births in parts on the real batch applier and database: state is replaced only when all
parts are in, parts of different snapshots never mix, and a missing part asks for a resync."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocols.messages import Birth, ShelfCount
from tests.cloud.harness import StateHarness
from tests.cloud.streams import NODE, STORE, birth, gtin, rfid


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[StateHarness]:
    state = StateHarness(
        f"sqlite+aiosqlite:///{tmp_path}/state.db",
        {STORE: [NODE]},
        snapshot_part_timeout_s=0.3,
        resync_min_interval_s=0,
    )
    await state.start()
    yield state
    await state.close()


def parts(bd_seq: int, first_seq: int, snapshot_id: str, rows: list[int], n: int) -> list[Birth]:
    shelves = [ShelfCount(shelf="shelf-1", gtin=gtin(i), count=1) for i in rows]
    size = -(-len(shelves) // n)
    whole = birth(bd_seq)
    return [
        whole.model_copy(
            update={
                "seq": first_seq + k,
                "shelves": shelves[k * size : (k + 1) * size],
                "part": k + 1,
                "parts": n,
                "snapshot_id": snapshot_id,
            }
        )
        for k in range(n)
    ]


async def test_state_is_replaced_only_with_every_part(harness: StateHarness) -> None:
    await harness.feed(birth(1, shelves={("shelf-9", gtin(999)): 5}))
    new = parts(2, 1, "snapshot-aaaa", list(range(30)), 3)
    other = parts(2, 10, "snapshot-bbbb", list(range(100, 130)), 3)
    for message in (new[2], other[0], new[0]):  # out of order, another snapshot between
        outcome = await harness.feed(message)
        assert (outcome.applied, outcome.dead_lettered) == (1, 0)
        assert await harness.inventory(STORE) == {("shelf-9", gtin(999)): 5}
    outcome = await harness.feed(new[1])
    assert (outcome.applied, outcome.dead_lettered) == (1, 0)
    assert await harness.inventory(STORE) == {("shelf-1", gtin(i)): 1 for i in range(30)}
    assert len(harness.applier.staging) == 1  # the other snapshot still waits


async def test_a_missing_part_asks_for_a_resync(harness: StateHarness) -> None:
    await harness.feed(birth(1, shelves={("shelf-9", gtin(999)): 5}))
    new = parts(2, 1, "snapshot-cccc", list(range(20)), 2)
    await harness.feed(new[0])
    await asyncio.sleep(0.4)
    outcome = await harness.feed(rfid(1, {("shelf-9", gtin(999)): 4}))
    [command] = outcome.commands
    assert command.name == "resync"
    assert command.args["missing_parts"] == [2]
    assert len(harness.applier.staging) == 0
    assert await harness.inventory(STORE) == {("shelf-9", gtin(999)): 4}
