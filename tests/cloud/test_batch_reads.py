"""A batch reads its nodes' committed positions at once, and writes node states at its end.

A birth storm (every store at once, after a broker restart) was a few database round trips
per message; these tests hold the batch to a few statements and check that the positions
read in bulk give the same dedup, gaps and node states as reading them one at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event

from cloud.ingest import apply
from protocols.messages import NodeState
from tests.cloud.harness import StateHarness
from tests.cloud.streams import GTIN, NODE, birth, rfid, status

SHELF = "aisle3-shelf2"
STORES = [f"store-{n:03d}" for n in range(5)]


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[StateHarness]:
    h = StateHarness(database_url, {s: [NODE] for s in STORES}, resync_min_interval_s=0)
    await h.start()
    yield h
    await h.close()


def _count_reads(harness: StateHarness) -> dict[str, int]:
    reads = {"stream_positions": 0, "dedup_marks": 0, "nodes": 0}

    @event.listens_for(harness.engine.sync_engine, "before_cursor_execute")
    def _seen(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        text = " ".join(statement.split())
        for table in reads:
            if text.startswith("SELECT") and f"FROM {table}" in text:
                reads[table] += 1

    return reads


async def test_a_restarted_applier_reads_positions_in_bulk_and_dedups_the_same(
    harness: StateHarness, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 stores, 2 per statement: chunks of 2, 2 and 1, so a store sits on each boundary
    monkeypatch.setattr(apply, "PREFETCH_STORES", 2)
    await harness.feed(
        *(rfid(seq, {(SHELF, GTIN): seq}, store=s) for s in STORES for seq in (1, 3))
    )
    # the gap 2 is open in every store: seq 3 is an out-of-order mark above hw 1

    restarted = StateHarness(database_url, {s: [NODE] for s in STORES}, resync_min_interval_s=0)
    await restarted.start()
    try:
        reads = _count_reads(restarted)
        again = await restarted.feed(
            *(rfid(seq, {(SHELF, GTIN): seq}, store=s) for s in STORES for seq in (1, 3, 2))
        )
        # 3 chunks of stores, one statement each for positions, marks and nodes
        assert reads == {"stream_positions": 3, "dedup_marks": 3, "nodes": 3}
        # 1 and 3 were committed before the restart: duplicates; 2 fills the gap
        assert (again.applied, again.duplicates) == (len(STORES), 2 * len(STORES))
        assert {key[0]: hw for key, hw in again.committed.items()} == {s: 3 for s in STORES}
        # read once: the next batch of the same nodes reads nothing
        await restarted.feed(rfid(4, {(SHELF, GTIN): 4}, store=STORES[0]))
        assert reads == {"stream_positions": 3, "dedup_marks": 3, "nodes": 3}
    finally:
        await restarted.close()


async def test_a_stream_without_a_row_starts_as_a_new_stream(harness: StateHarness) -> None:
    # read with its node, no row: seq 1 is the first, seq 3 of another store misses 1..2
    outcome = await harness.feed(
        rfid(1, {(SHELF, GTIN): 1}, store=STORES[1]), rfid(3, {(SHELF, GTIN): 3}, store=STORES[2])
    )
    assert outcome.applied == 2
    assert [(c.store, c.args["missing_from"], c.args["missing_to"]) for c in outcome.commands] == [
        (STORES[2], 1, 2)
    ]


async def test_node_states_of_a_batch_are_written_once_the_latest_standing(
    harness: StateHarness,
) -> None:
    store = STORES[2]
    outcome = await harness.feed(
        birth(3, store=store, shelves={(SHELF, GTIN): 7}),
        status(NodeState.OFFLINE, 3, store=store),
        birth(4, seq=1, store=store, shelves={(SHELF, GTIN): 8}),
    )
    assert outcome.applied == 3
    row = await harness.node(store, NODE)
    # the last birth's state and columns: set by one statement at the end of the batch
    assert (row.status, row.bd_seq, row.version) == ("online", 4, "0.1.0")
    assert row.last_birth_at is not None
    assert await harness.inventory(store) == {(SHELF, GTIN): 8}
    # a stale status of the older session changes nothing
    await harness.feed(status(NodeState.OFFLINE, 3, store=store))
    assert (await harness.node(store, NODE)).status == "online"
