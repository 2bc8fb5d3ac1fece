"""Ingest rules on a real state store, once on SQLite and once on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cloud.state import schema
from protocols.codec import encode
from protocols.messages import AckStatus, CommandAck, NodeState
from tests.cloud.harness import StateHarness
from tests.cloud.streams import GTIN, NODE, RFID_STREAM, STORE, birth, rfid, status
from tests.samples import all_samples

SHELF = "aisle3-shelf2"


@pytest.fixture
async def harness(database_url: str) -> AsyncIterator[StateHarness]:
    h = StateHarness(database_url, {STORE: [NODE, "pi-back"]}, resync_min_interval_s=3600)
    await h.start()
    yield h
    await h.close()


async def test_count_deltas_apply_absolute_counts(harness: StateHarness) -> None:
    await harness.feed(rfid(1, {(SHELF, GTIN): 5}), rfid(2, {(SHELF, GTIN): 4}))
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 4}


async def test_replayed_duplicates_apply_once(harness: StateHarness) -> None:
    first = await harness.feed(rfid(1, {(SHELF, GTIN): 5}), rfid(2, {(SHELF, GTIN): 6}))
    assert first.applied == 2
    again = await harness.feed(rfid(1, {(SHELF, GTIN): 5}), rfid(2, {(SHELF, GTIN): 6}))
    assert (again.applied, again.duplicates) == (0, 2)
    # a duplicate inside one batch too
    same = await harness.feed(rfid(3, {(SHELF, GTIN): 7}), rfid(3, {(SHELF, GTIN): 7}))
    assert (same.applied, same.duplicates) == (1, 1)
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 7}
    assert harness.history.spooled == [f"{RFID_STREAM}:{seq}" for seq in (1, 2, 3)]


async def test_gap_asks_for_one_resync_and_remembers_out_of_order_seqs(
    harness: StateHarness,
) -> None:
    await harness.feed(rfid(1, {(SHELF, GTIN): 1}))
    gap = await harness.feed(rfid(4, {(SHELF, GTIN): 4}), rfid(5, {(SHELF, GTIN): 5}))
    assert [c.name for c in gap.commands] == ["resync"]
    command = gap.commands[0]
    assert command.args["missing_from"] == 2
    assert command.args["missing_to"] == 3
    # a second gap within the rate limit sends nothing more
    later = await harness.feed(rfid(9, {(SHELF, GTIN): 9}))
    assert later.commands == []
    # the marks recognise a redelivery of an out-of-order seq
    again = await harness.feed(rfid(4, {(SHELF, GTIN): 4}))
    assert again.duplicates == 1
    # the gap fills: late seqs are applied, then everything folds into the high-water mark
    filled = await harness.feed(rfid(2, {(SHELF, GTIN): 2}), rfid(3, {(SHELF, GTIN): 3}))
    assert filled.applied == 2
    marks = await harness.rows(schema.dedup_marks)
    assert [row.seq for row in marks] == [9]
    commands = await harness.rows(schema.commands)
    assert [(row.name, row.status) for row in commands] == [("resync", "sent")]
    # the edge answers the resync
    ack = CommandAck(
        store=STORE,
        node=NODE,
        seq=0,
        correlation_id=command.correlation_id,
        command="resync",
        status=AckStatus.DONE,
    )
    late_accept = ack.model_copy(update={"seq": 1, "status": AckStatus.ACCEPTED})
    await harness.feed(ack, late_accept)
    commands = await harness.rows(schema.commands)
    assert [row.status for row in commands] == ["done"]  # never moves backwards


async def test_birth_rebuilds_inventory_and_covers_earlier_events(
    harness: StateHarness,
) -> None:
    other = "aisle1-shelf1"
    await harness.feed(rfid(1, {(SHELF, GTIN): 5, (other, GTIN): 2}))
    # the node restarts: its birth snapshot replaces its shelves, up to rfid seq 10
    await harness.feed(birth(2, shelves={(SHELF, GTIN): 9}, rfid_seq=10))
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 9}
    # the outbox then replays seqs 2..10: history only (the snapshot has them), no resync
    replay = await harness.feed(*(rfid(s, {(SHELF, GTIN): s}) for s in range(2, 11)))
    assert replay.applied == 9
    assert replay.commands == []
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 9}
    # new events apply again
    await harness.feed(rfid(11, {(SHELF, GTIN): 8}))
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 8}
    node = await harness.node(STORE, NODE)
    assert (node.status, node.bd_seq) == ("online", 2)


async def test_gap_already_covered_by_a_birth_needs_no_resync(harness: StateHarness) -> None:
    await harness.feed(rfid(1, {(SHELF, GTIN): 1}))
    await harness.feed(birth(3, shelves={(SHELF, GTIN): 20}, rfid_seq=50))
    # the outbox lost 2..39 (overflow); what it still has starts at 40
    outcome = await harness.feed(rfid(40, {(SHELF, GTIN): 40}), rfid(51, {(SHELF, GTIN): 21}))
    assert outcome.commands == []
    assert outcome.applied == 2
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 21}


async def test_stale_will_does_not_mark_a_newer_session_offline(harness: StateHarness) -> None:
    await harness.feed(birth(5))
    await harness.feed(status(NodeState.ONLINE, 5))
    late_will = await harness.feed(status(NodeState.OFFLINE, 4))
    assert late_will.changes == []
    node = await harness.node(STORE, NODE)
    assert (node.status, node.bd_seq) == ("online", 5)
    await harness.feed(status(NodeState.OFFLINE, 5))
    assert (await harness.node(STORE, NODE)).status == "offline"
    # a stale birth does not resurrect the old session's shelves
    await harness.feed(birth(6, seq=1, shelves={(SHELF, GTIN): 3}))
    await harness.feed(birth(5, seq=2, shelves={(SHELF, GTIN): 99}))
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 3}


async def test_unknown_store_node_and_forged_payloads_are_dead_lettered(
    harness: StateHarness,
) -> None:
    forged = rfid(1, {(SHELF, GTIN): 1}, node="pi-back")
    outcome = await harness.feed(
        rfid(1, {(SHELF, GTIN): 1}, store="store-999"),
        rfid(1, {(SHELF, GTIN): 1}, node="pi-ghost"),
        (f"storegate/v1/{STORE}/{NODE}/rfid/reader-1", encode(forged)),  # payload says pi-back
        (f"storegate/v1/{STORE}/{NODE}/rfid/reader-1", b"\x00\xffnot json"),
        ("storegate/v2/x/y/status", b"{}"),
        rfid(1, {(SHELF, GTIN): 1}),  # the valid one flows on
    )
    assert (outcome.applied, outcome.dead_lettered) == (1, 5)
    rows = await harness.rows(schema.dead_letters)
    assert [row.reason for row in rows] == [
        "unknown_store",
        "unknown_node",
        "topic_mismatch",
        "not_json",
        "bad_topic",
    ]
    assert "pi-back" in rows[2].detail
    assert "\\x00" in rows[3].payload_excerpt
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 1}
    assert await harness.inventory("store-999") == {}


async def test_every_sample_message_is_accepted(harness: StateHarness) -> None:
    samples = all_samples()
    outcome = await harness.feed(*samples)
    # what the cloud itself sends (commands, commit marks, offers, order updates) is not ingested
    from_cloud = [m for m in samples if m.channel.from_cloud]
    assert len(from_cloud) == 4  # command, committed, offer, order update
    assert outcome.dead_lettered == 0
    assert outcome.applied == len(samples) - len(from_cloud)
    node = await harness.node(STORE, NODE)
    assert node.health["outbox"]["depth"] == 3


async def test_spool_full_rolls_back_and_retries_cleanly(harness: StateHarness) -> None:
    from cloud.ingest.apply import InfrastructureError

    harness.history.full = True
    with pytest.raises(InfrastructureError, match="spool full"):
        await harness.feed(rfid(1, {(SHELF, GTIN): 5}))
    assert await harness.inventory(STORE) == {}
    harness.history.full = False
    outcome = await harness.feed(rfid(1, {(SHELF, GTIN): 5}))
    assert outcome.applied == 1  # not mistaken for a duplicate: the cache rolled back too
    assert await harness.inventory(STORE) == {(SHELF, GTIN): 5}


async def test_migrations_are_idempotent(harness: StateHarness) -> None:
    from cloud.state.db import migrate

    await migrate(harness.engine)
    await migrate(harness.engine)
